"""The ``aws`` instance plugin: one EC2 instance per instance, through boto3.

Endpoint, region and credentials
    All come from boto3's standard settings: ``AWS_ENDPOINT_URL`` (or
    ``AWS_ENDPOINT_URL_EC2``), ``AWS_DEFAULT_REGION``, ``AWS_PROFILE`` and the shared
    config and credentials files, the instance's role... So the same plugin drives AWS or
    any endpoint that speaks EC2. The plugin stores no credential and logs none.

Properties
    The parameters of EC2's ``RunInstances`` under boto3's own names (``ImageId``,
    ``InstanceType``, ``SubnetId``, ``SecurityGroupIds``, ``KeyName``,
    ``IamInstanceProfile``, ``BlockDeviceMappings``, ``InstanceMarketOptions``...), checked
    against botocore's model of the request, so a misspelt or mistyped field is refused
    before anything is sent. ``MinCount``, ``MaxCount``, ``ClientToken`` and ``DryRun`` are
    the plugin's (one instance per call, made idempotent by a token of its own);
    ``UserData`` comes from the spec's ``Init`` and ``TagSpecifications`` from its tags, so
    none of these may be given. Validate also asks EC2 whether the image, instance type,
    subnet, security groups and key pair named exist.

Tags
    A spec's tags are applied by ``RunInstances`` itself (to the instance and its
    volumes), so an instance is never untagged, beside two the plugin keeps:
    ``infrakit.plugin=<plugin name>`` marks ownership (an instance without it is never
    described, labelled or terminated) and ``infrakit.logical_id`` holds the logical ID.
    DescribeInstances filters on tags on EC2's side, one page of up to 1000 instances per
    call; pending, running, stopping and stopped instances are described, shutting-down
    and terminated ones are not.

Eventual consistency
    EC2 may not list an instance for a while after ``RunInstances`` returned it. Until it
    is listed, or ``$INFRAKIT_AWS_VISIBILITY_DEADLINE`` seconds (600 by default) have
    passed, the plugin describes it itself from what it launched; likewise an instance it
    terminated is no longer described even while EC2 still lists it running. Both lists
    live in memory and in ``launched.json`` in the plugin's directory (written
    atomically), so a restarted plugin does not lose sight of them.

Destroy
    Terminates the instance. One of the plugin's that is terminated (or shutting down)
    already, or that EC2 no longer lists at all, is destroyed already: the call succeeds
    and the log says it was gone. An instance without the plugin's tag is refused, whatever
    its state; so is Label of an instance that is gone.

Errors
    Throttling and other transient faults are retried with a jittered exponential backoff
    for at most ``$INFRAKIT_AWS_RETRY_SECONDS`` seconds (30 by default); other faults come
    back at once as an error naming the field or the setting at fault.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import msgspec
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as EndpointConnectionFault
from botocore.validate import ParamValidator

from infrakit.plugins.instance import provider_tags, retry
from infrakit.plugins.instance.settings import provider_waits
from infrakit.plugins.instance.state import state_directory
from infrakit.plugins.instance.visibility import VisibilityFile
from infrakit.spi.errors import NotFoundError, PluginError
from infrakit.spi.types import Description, Spec

log = logging.getLogger(__name__)
for _chatty in ("botocore", "boto3", "urllib3"):
    # at debug level these log every request with its Authorization header (the access
    # key ID): whatever the plugin's own level, they say only warnings
    logging.getLogger(_chatty).setLevel(logging.WARNING)

DESCRIBED_STATES = ["pending", "running", "stopping", "stopped"]
GONE_STATES = frozenset({"shutting-down", "terminated"})
PAGE = 1000
"""DescribeInstances' largest page: one call per pass for any group up to that size."""

PLUGIN_FIELDS = {
    "MinCount": "the plugin launches exactly one instance per Provision",
    "MaxCount": "the plugin launches exactly one instance per Provision",
    "UserData": "the spec's Init is the user data",
    "TagSpecifications": "the spec's tags are applied at launch",
    "ClientToken": "the plugin gives each launch its own idempotency token",
    "DryRun": "Validate checks the request; Provision launches",
}
"""RunInstances parameters the plugin fills itself, and why."""

RETRYABLE = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "ThrottledException",
    "RequestThrottled", "RequestThrottledException", "TooManyRequestsException",
    "SlowDown", "ServiceUnavailable", "Unavailable", "InternalError", "InternalFailure",
    "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete",
    "EC2ThrottledException", "InsufficientInstanceCapacity",
})
"""Error codes of faults that pass: the call is tried again after a backoff."""

FIELD_OF_ERROR = {
    "InvalidAMIID": "ImageId",
    "InvalidInstanceType": "InstanceType",
    "InvalidSubnetID": "SubnetId",
    "InvalidGroup": "SecurityGroupIds",
    "InvalidKeyPair": "KeyName",
    "InvalidParameterValue": "",
}
"""The Properties field an EC2 error code (before its first dot) points at."""

CREDENTIAL_ERRORS = frozenset({
    "AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId", "SignatureDoesNotMatch",
    "ExpiredToken", "RequestExpired", "OptInRequired",
})

_NAME = re.compile(r"[^\x00-\x1f]{1,256}")
_INSTANCE_ID = re.compile(r"i-[0-9a-f]{8,17}")


class Launched(msgspec.Struct, rename="pascal", kw_only=True):
    """An instance the plugin launched and EC2 has not listed yet."""

    tags: dict[str, str]
    logical_id: str | None = msgspec.field(default=None, name="LogicalID")
    until: float
    """Wall-clock time after which it is no longer described unless EC2 lists it."""


class Visibility(msgspec.Struct, rename="pascal", kw_only=True):
    """The state file: instances launched but not yet listed, and instances terminated
    but perhaps still listed, by instance ID (the latter with their deadlines)."""

    launched: dict[str, Launched] = {}
    terminated: dict[str, float] = {}


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        return _code(exc) in RETRYABLE
    return isinstance(exc, EndpointConnectionFault | HTTPClientError)


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def check_tags(tags: dict[str, str], where: str) -> None:
    """What EC2 and the plugin allow as tag keys and values."""
    for key, value in tags.items():
        provider_tags.refuse_reserved(key, where)
        if key.lower().startswith("aws:"):
            raise PluginError(f"{where}: {key!r}: keys starting with 'aws:' are EC2's own")
        if not _NAME.fullmatch(key) or len(key) > 128:
            raise PluginError(f"{where}: {key!r} is not an EC2 tag key (1 to 128 characters)")
        if len(value) > 256:
            raise PluginError(f"{where}: the value of {key!r} is longer than EC2's 256 "
                              "characters")
    if len(tags) > 48:
        raise PluginError(f"{where}: {len(tags)} tags; EC2 keeps 50 per instance, two of "
                          "which are the plugin's")


class AwsInstancePlugin:
    """Instance/0.5.0 over the EC2 instances of one account and region."""

    def __init__(self, name: str, directory: Path, *,
                 visibility_deadline: float | None = None,
                 retry_seconds: float | None = None) -> None:
        self.name = name
        self.visibility_deadline, self.retry_seconds = provider_waits(
            "AWS", visibility_deadline, retry_seconds)
        self._state = VisibilityFile(state_directory(directory) / "launched.json", Visibility)
        self._lock = self._state.lock
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._input_shape: Any = None

    # -- EC2 ---------------------------------------------------------------------------------

    def _ec2(self) -> Any:
        """The EC2 client, made on first use, so that the plugin starts (and answers with a
        clear error) without a region or credentials. botocore's own retries are off: the
        plugin's backoff is the only one, with one bound."""
        with self._client_lock:
            if self._client is None:
                config = Config(retries={"total_max_attempts": 1}, max_pool_connections=16,
                                connect_timeout=10, read_timeout=60)
                try:
                    client = boto3.session.Session().client("ec2", config=config)
                except BotoCoreError as exc:
                    raise PluginError(f"EC2: {exc} (set AWS_DEFAULT_REGION or a profile's "
                                      "region)") from None
                client.meta.events.register("before-call.ec2", _log_call)
                self._client = client
            return self._client

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        """One EC2 call, retried while its faults pass, its errors made plain."""
        method = getattr(self._ec2(), operation)
        with self._errors(operation):
            answer: dict[str, Any] = retry.retrying(self.retry_seconds, _retryable)(
                method, **params)
        return answer

    @contextmanager
    def _errors(self, operation: str) -> Iterator[None]:
        try:
            yield
        except ClientError as exc:
            raise self._client_error(operation, exc) from None
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise PluginError(f"EC2 {operation}: {exc}: set AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or another source of "
                              "boto3's credential chain") from None
        except BotoCoreError as exc:
            raise PluginError(f"EC2 {operation} failed: {exc}") from None

    def _client_error(self, operation: str, exc: Any) -> PluginError:
        code = _code(exc)
        message = exc.response.get("Error", {}).get("Message", "") or str(exc)
        if code in RETRYABLE:
            return PluginError(f"EC2 {operation}: {code}: {message} (still failing after "
                               f"{self.retry_seconds:g} s of retries)")
        if code in CREDENTIAL_ERRORS:
            return PluginError(f"EC2 {operation}: the credentials were refused: {code}: "
                               f"{message}")
        if code == "InvalidInstanceID.NotFound":
            return NotFoundError(f"EC2 {operation}: {code}: {message}")
        if code.startswith("InvalidInstanceID"):  # malformed: no instance can have it
            return PluginError(f"Instance: EC2 {operation}: {code}: {message}")
        field = FIELD_OF_ERROR.get(code.split(".")[0])
        where = f"Properties.{field}: " if field else ""
        return PluginError(f"{where}EC2 {operation}: {code}: {message}")

    # -- Properties --------------------------------------------------------------------------

    def _request(self, properties: Any) -> dict[str, Any]:
        """The RunInstances request of ``properties``, checked against botocore's model."""
        if properties is None:
            properties = {}
        if not isinstance(properties, dict):
            raise PluginError("Properties: expected an object of RunInstances parameters, "
                              f"got {type(properties).__name__}")
        for field, why in PLUGIN_FIELDS.items():
            if field in properties:
                raise PluginError(f"Properties.{field}: may not be given: {why}")
        if "ImageId" not in properties and "LaunchTemplate" not in properties:
            raise PluginError("Properties.ImageId: required (or a LaunchTemplate)")
        request = {**properties, "MinCount": 1, "MaxCount": 1}
        report = ParamValidator().validate(request, self._shape())
        if report.has_errors():
            problems = "; ".join(line.strip() for line in
                                 report.generate_report().splitlines() if line.strip())
            raise PluginError(f"Properties: not a valid RunInstances request: {problems}")
        return request

    def _shape(self) -> Any:
        """RunInstances' input shape, from botocore's model (no region needed)."""
        if self._input_shape is None:
            model = botocore.session.get_session().get_service_model("ec2")
            self._input_shape = model.operation_model("RunInstances").input_shape
        return self._input_shape

    # -- Instance/0.5.0 ----------------------------------------------------------------------

    def validate(self, properties: Any) -> None:
        """The request's shape, then whether EC2 knows what it names."""
        request = self._request(properties)
        if "ImageId" in request:
            images = self._call("describe_images", ImageIds=[request["ImageId"]])["Images"]
            if not images:
                raise PluginError(f"Properties.ImageId: no image {request['ImageId']!r}")
        if "InstanceType" in request:
            self._call("describe_instance_types", InstanceTypes=[request["InstanceType"]])
        if "SubnetId" in request:
            self._call("describe_subnets", SubnetIds=[request["SubnetId"]])
        if request.get("SecurityGroupIds"):
            self._call("describe_security_groups", GroupIds=request["SecurityGroupIds"])
        if "KeyName" in request:
            self._call("describe_key_pairs", KeyNames=[request["KeyName"]])

    def provision(self, spec: Spec) -> str:
        request = self._request(spec.properties)
        tags = provider_tags.from_spec(
            spec, check_tags, "aws", "Properties.BlockDeviceMappings or NetworkInterfaces")
        ec2_tags = [{"Key": k, "Value": v}
                    for k, v in provider_tags.launch_tags(tags, self.name, spec.logical_id).items()]
        request["TagSpecifications"] = [{"ResourceType": "instance", "Tags": ec2_tags},
                                        {"ResourceType": "volume", "Tags": ec2_tags}]
        if spec.init:
            request["UserData"] = spec.init
        request["ClientToken"] = uuid.uuid4().hex  # a retried launch launches once
        answer = self._call("run_instances", **request)
        instance: str = answer["Instances"][0]["InstanceId"]
        record = Launched(tags=tags, logical_id=spec.logical_id,
                          until=time.time() + self.visibility_deadline)

        def add(state: Visibility, now: float) -> bool:
            state.launched[instance] = record
            return True

        self._state.update(add)
        return instance

    def _owned(self, instance: str, doing: str) -> str | None:
        """The EC2 state of one of the plugin's instances (``launched`` for one launched
        here that EC2 does not list yet); None when EC2 lists no instance by that ID (gone
        long ago, or never was). An ID not of EC2's form, or an instance the plugin did
        not make, is refused with the reason."""
        if not _INSTANCE_ID.fullmatch(instance):
            raise NotFoundError(f"Instance: {instance!r} is not an EC2 instance ID "
                                f"(i-<hex digits>); cannot {doing} it")
        with self._lock:
            unlisted = "launched" if instance in self._state.state.launched else None
        try:
            found = self._call("describe_instances", InstanceIds=[instance])
        except NotFoundError:
            return unlisted
        for reservation in found["Reservations"]:
            for inst in reservation["Instances"]:
                tags = {t["Key"]: t["Value"] for t in inst.get("Tags") or []}
                if tags.get(provider_tags.OWNER) != self.name:
                    raise NotFoundError(
                        f"Instance: {instance!r} was not made by plugin {self.name} (it "
                        f"lacks the tag {provider_tags.OWNER}={self.name}); refusing to {doing} it")
                return str(inst["State"]["Name"])
        return unlisted

    def _call_known(self, instance: str, operation: str, **params: Any) -> None:
        """A call on an instance known to exist: EC2 may not know a new one everywhere
        yet, so "no such instance" is tried again for a while too."""
        retrying = retry.retrying(self.retry_seconds, _unknown, longest_wait=2)
        retrying(self._call, operation, **params)

    def label(self, instance: str, labels: dict[str, str]) -> None:
        check_tags(labels, "Labels")
        ec2_state = self._owned(instance, "label")
        if ec2_state is None:
            raise NotFoundError(f"Instance: no EC2 instance {instance!r} (it is gone, or never "
                                "was); cannot label it")
        if ec2_state in GONE_STATES:
            raise NotFoundError(f"Instance: EC2 instance {instance!r} is gone ({ec2_state}); "
                                "cannot label it")
        if not labels:
            return
        self._call_known(instance, "create_tags", Resources=[instance],
                         Tags=[{"Key": k, "Value": v} for k, v in labels.items()])

        def relabel(state: Visibility, now: float) -> bool:
            record = state.launched.get(instance)
            if record is None:
                return False
            record.tags = {**record.tags, **labels}
            return True

        self._state.update(relabel)

    def destroy(self, instance: str) -> None:
        ec2_state = self._owned(instance, "terminate")
        if ec2_state is None or ec2_state in GONE_STATES:
            log.info("Instance %s was already gone (%s): nothing to terminate", instance,
                     ec2_state or "EC2 lists no instance by that ID")
            self._state.update(lambda state, now: state.launched.pop(instance, None) is not None)
            return
        self._call_known(instance, "terminate_instances", InstanceIds=[instance])

        def forget(state: Visibility, now: float) -> bool:
            state.launched.pop(instance, None)
            state.terminated[instance] = now + self.visibility_deadline
            return True

        self._state.update(forget)

    def describe_instances(self, tags: dict[str, str], properties: bool) -> list[Description]:
        """The plugin's instances that carry every tag: EC2 filters, in pages of
        :data:`PAGE`; instances launched and not listed yet are added, instances
        terminated and still listed left out."""
        owner = provider_tags.filter_literal(self.name)
        filters = [{"Name": f"tag:{provider_tags.OWNER}", "Values": [owner]},
                   {"Name": "instance-state-name", "Values": DESCRIBED_STATES}]
        filters += [{"Name": f"tag:{k}", "Values": [provider_tags.filter_literal(v)]}
                    for k, v in tags.items()]
        listed: dict[str, Description | None] = {}
        token: str | None = None
        while True:
            page = self._call("describe_instances", Filters=filters, MaxResults=PAGE,
                              **({"NextToken": token} if token else {}))
            for inst in (i for r in page["Reservations"] for i in r["Instances"]):
                listed[inst["InstanceId"]] = self._description(inst, properties)
            token = page.get("NextToken")
            if not token:
                break
        return self._state.describe(listed, tags, _launched_facts if properties else None)

    def _description(self, inst: dict[str, Any], properties: bool) -> Description | None:
        """A listed instance's description, if it is the plugin's: filter values are
        matched by EC2, exact equality is the plugin's."""
        all_tags = {t["Key"]: t["Value"] for t in inst.get("Tags") or []}
        if all_tags.get(provider_tags.OWNER) != self.name:
            return None
        desc = Description(id=inst["InstanceId"], logical_id=all_tags.get(provider_tags.LOGICAL_ID),
                           tags=provider_tags.without_reserved(all_tags))
        if properties:
            desc.properties = _facts(inst)
        return desc


def _unknown(exc: BaseException) -> bool:
    return isinstance(exc, NotFoundError)


def _launched_facts(instance: str, record: Launched) -> dict[str, Any]:
    """What a description with properties tells of an instance EC2 does not list yet."""
    return {"InstanceId": instance, "State": "launched"}


def _facts(inst: dict[str, Any]) -> dict[str, Any]:
    """What a description with properties tells of an instance."""
    launch = inst.get("LaunchTime")
    facts = {"InstanceId": inst["InstanceId"], "State": inst["State"]["Name"],
             "InstanceType": inst.get("InstanceType"), "ImageId": inst.get("ImageId"),
             "LaunchTime": launch.isoformat() if launch is not None else None,
             "AvailabilityZone": inst.get("Placement", {}).get("AvailabilityZone"),
             "SubnetId": inst.get("SubnetId"), "PrivateIpAddress": inst.get("PrivateIpAddress"),
             "PublicIpAddress": inst.get("PublicIpAddress")}
    return {k: v for k, v in facts.items() if v is not None}


def _log_call(model: Any, **_: Any) -> None:
    """Log each EC2 call's name (never its parameters: no secret or user data leaks)."""
    log.debug("EC2 call %s", model.name)
