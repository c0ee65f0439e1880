"""The ``cloud`` instance plugin: one node of any Apache Libcloud compute driver per instance.

Properties
    ``Driver`` (a libcloud provider name: ``ec2``, ``gce``, ``azure_arm``...), ``Region``
    (the driver's default when empty), ``Size`` and ``Image`` (an ID, or a name the plugin
    looks up), ``TagStyle`` (see Tags) and ``Extra``: further keyword arguments of that
    driver's ``create_node`` (``ex_keyname``, ``ex_security_groups``...). Extra's names are
    checked against the signature of the driver's ``create_node``, so a misspelt one is
    refused by name; the arguments the plugin fills itself may not be given. Validate also
    asks the provider whether the image and the size exist, so bad input is refused before
    anything is made.

Credentials and endpoint
    From the plugin's environment, never from Properties, and never stored or logged:
    ``$INFRAKIT_CLOUD_KEY`` and ``$INFRAKIT_CLOUD_SECRET`` are the driver's ``key`` and
    ``secret`` (for EC2: the access key ID and the secret key), ``$INFRAKIT_CLOUD_TOKEN``
    its session ``token`` if it takes one. ``$INFRAKIT_CLOUD_ENDPOINT`` (a URL such as
    ``http://127.0.0.1:5000``) replaces the provider's endpoint, for a compatible service.
    ``$INFRAKIT_CLOUD_DRIVER_ARGS`` is a JSON object of further constructor arguments by
    driver name, e.g. ``{"ec2": {"signature_version": "4"}}``.

Init
    Becomes the node's user data through the first of ``ex_userdata``, ``ex_user_data``,
    ``ex_customdata`` or ``ex_custom_data`` that the driver's ``create_node`` takes. A
    driver with none of them cannot run an Init: a spec that has one is refused.

Tags
    Two styles; ``Properties.TagStyle`` picks one, else the driver's abilities do:

    ``metadata``
        For drivers that tag a node at launch (``create_node(ex_metadata=...)``), re-tag it
        (``ex_create_tags``) and filter a listing (``list_nodes(ex_filters=...)``): the EC2
        family (``ec2``, ``eucalyptus``, ``nimbus``). A spec's tags are the node's tags,
        beside ``infrakit.plugin=<plugin name>`` (ownership) and ``infrakit.logical_id``;
        DescribeInstances filters on tags and on the state on the provider's side.
    ``name``
        For every other driver. A node is named ``<plugin name>-<12 hex digits>``, which is
        what marks it as the plugin's; its tags and logical ID are kept by node name in the
        plugin's state file, written before the node is asked for, so a crash cannot leave
        a node without them. DescribeInstances lists every node and filters on the plugin's
        side. A node that has carried the ownership tag is a ``metadata`` node, never a
        ``name`` one. An entry whose node is gone is dropped once the visibility deadline
        has passed since it was written.

    Either way a node the plugin did not make is never described, labelled or destroyed.
    Only nodes that are pending, starting, running or rebooting are described.

Destroy
    A node of the plugin's that is terminated already, or an ID that no node has where the
    plugin makes nodes (destroyed long ago), is destroyed already: the call succeeds and the
    log says it was gone. Label of such a node is refused.

Eventual consistency
    A provider may not list a node for a while after ``create_node`` returned it. Until it
    is listed, or ``$INFRAKIT_CLOUD_VISIBILITY_DEADLINE`` seconds (600 by default) have
    passed, the plugin describes it from what it asked for; a node it destroyed is no
    longer described even while the provider still lists it. The places it has made nodes
    in (driver, region, tag style) are recorded before the first node is asked for there,
    since DescribeInstances is given tags only and must know where to look. All of this is
    kept in ``state.json`` in the plugin's directory, written atomically.

Errors
    Throttling and other transient faults are retried with a jittered exponential backoff
    for at most ``$INFRAKIT_CLOUD_RETRY_SECONDS`` seconds (30 by default). A node is asked
    for again after a fault that may have made it only when the driver takes an
    idempotency token (``ex_clienttoken``); otherwise only after throttling, which made
    nothing. Other faults come back at once, naming the field or the setting at fault.

Paging
    libcloud's ``list_nodes`` reads one answer; EC2 sends every instance in it when no page
    size is asked for, as the driver does.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import msgspec
from libcloud.common.exceptions import BaseHTTPError
from libcloud.compute.base import Node
from libcloud.compute.types import NodeState

from infrakit.plugins.instance import provider_tags
from infrakit.plugins.instance.cloud_drivers import (
    Absent,
    Drivers,
    Place,
    driver_class,
    not_found,
    parameters,
    throttled,
    transient,
    transient_or_unknown,
)
from infrakit.plugins.instance.settings import provider_waits
from infrakit.plugins.instance.state import state_directory
from infrakit.plugins.instance.visibility import VisibilityFile
from infrakit.spi.errors import NotFoundError, PluginError
from infrakit.spi.properties import decode_properties
from infrakit.spi.types import Description, Spec

log = logging.getLogger(__name__)

NAME_TAG = "Name"
"""The tag EC2-family drivers write the node's name into: not one of the spec's tags."""

LIVE = frozenset({NodeState.PENDING, NodeState.STARTING, NodeState.RUNNING,
                  NodeState.REBOOTING})
"""Node states that count as an instance."""
EC2_LIVE = ["pending", "running"]
"""The same, as the EC2 family's ``instance-state-name`` filter spells it."""

USER_DATA_ARGS = ("ex_userdata", "ex_user_data", "ex_customdata", "ex_custom_data")
"""create_node's names for user data, by driver; the first one a driver takes is used."""
PLUGIN_ARGS = {
    "name": "the plugin names each node",
    "size": "Properties.Size is the size",
    "image": "Properties.Image is the image",
    "ex_mincount": "the plugin makes exactly one node per Provision",
    "ex_maxcount": "the plugin makes exactly one node per Provision",
    "ex_clienttoken": "the plugin gives each launch its own idempotency token",
    **{arg: "the spec's Init is the user data" for arg in USER_DATA_ARGS},
}
"""create_node arguments the plugin fills itself, and why (ex_metadata too, in the
``metadata`` style)."""

_NODE_ID = re.compile(r"[^\x00-\x1f/]{1,256}")


class CloudProperties(msgspec.Struct, rename="pascal", forbid_unknown_fields=True,
                      kw_only=True):
    """An instance's ``Properties``: which provider, and what node to make there."""

    driver: str
    size: str
    image: str
    region: str = ""
    tag_style: Literal["metadata", "name"] | None = None
    extra: dict[str, Any] = {}


class Named(msgspec.Struct, rename="pascal", kw_only=True):
    """The tags of a ``name``-style node, by node name."""

    tags: dict[str, str]
    logical_id: str | None = msgspec.field(default=None, name="LogicalID")
    since: float


class Launched(msgspec.Struct, rename="pascal", kw_only=True):
    """A node made and not listed yet."""

    place: str
    name: str
    tags: dict[str, str]
    logical_id: str | None = msgspec.field(default=None, name="LogicalID")
    until: float


class CloudState(msgspec.Struct, rename="pascal", kw_only=True):
    """The state file."""

    places: dict[str, Place] = {}
    named: dict[str, Named] = {}
    launched: dict[str, Launched] = {}
    terminated: dict[str, float] = {}


def _takes_any(function: Any) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD
               for p in inspect.signature(function).parameters.values())


def _node_tags(node: Any) -> dict[str, str]:
    tags = node.extra.get("tags")
    return dict(tags) if isinstance(tags, dict) else {}


def check_tags(tags: dict[str, str], where: str) -> None:
    for key in tags:
        provider_tags.refuse_reserved(key, where)
        if not key:
            raise PluginError(f"{where}: a tag key may not be empty")


def metadata_capable(cls: Any) -> bool:
    """Whether a driver can keep tags itself (see the module's notes on tag styles)."""
    return ("ex_metadata" in parameters(cls.create_node) and hasattr(cls, "ex_create_tags")
            and "ex_filters" in parameters(cls.list_nodes))


class Checked(msgspec.Struct, kw_only=True):
    """Properties checked against the driver's signatures."""

    props: CloudProperties
    place: Place
    cls: Any
    user_data_arg: str | None
    takes_token: bool


def check_properties(properties: Any) -> Checked:
    """Everything about Properties that needs no call to the provider."""
    props = decode_properties(properties, CloudProperties)
    for field in ("driver", "size", "image"):
        if not getattr(props, field):
            raise PluginError(f"Properties.{field.capitalize()}: must not be empty")
    cls = driver_class(props.driver)
    capable = metadata_capable(cls)
    style = props.tag_style or ("metadata" if capable else "name")
    if style == "metadata" and not capable:
        raise PluginError(f"Properties.TagStyle: driver {props.driver!r} cannot keep tags "
                          "(its create_node takes no ex_metadata, or it has no "
                          "ex_create_tags, or its list_nodes takes no ex_filters); use "
                          "'name'")
    if props.region and hasattr(cls, "list_regions"):
        regions = list(cls.list_regions())
        if props.region not in regions:
            close = difflib.get_close_matches(props.region, regions, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise PluginError(f"Properties.Region: {props.region!r} is not a region of "
                              f"driver {props.driver!r}{hint}")
    params = parameters(cls.create_node)
    taken = dict(PLUGIN_ARGS)
    if style == "metadata":
        taken["ex_metadata"] = "the spec's tags are the node's tags"
    accepted = sorted(n for n, p in params.items() if n != "self" and n not in taken
                      and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    for arg in props.extra:
        if arg in taken:
            raise PluginError(f"Properties.Extra.{arg}: may not be given: {taken[arg]}")
        if arg not in params and not _takes_any(cls.create_node):
            close = difflib.get_close_matches(arg, accepted, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise PluginError(f"Properties.Extra.{arg}: not an argument of driver "
                              f"{props.driver!r}'s create_node{hint} (it takes: "
                              f"{', '.join(accepted)})")
    user_data = next((a for a in USER_DATA_ARGS if a in params), None)
    return Checked(props=props, place=Place(driver=props.driver, region=props.region,
                                            tag_style=style),
                   cls=cls, user_data_arg=user_data, takes_token="ex_clienttoken" in params)


def _create(driver: Any, kwargs: dict[str, Any]) -> Any:
    """create_node; the driver's own complaints about its arguments name Extra."""
    try:
        return driver.create_node(**kwargs)
    except (TypeError, AttributeError, ValueError) as exc:
        raise PluginError(f"Properties.Extra: the driver's create_node refused its "
                          f"arguments: {exc}") from None


def _by_id(driver: Any, instance: str) -> Any:
    """The nodes of one ID; :class:`Absent` when the provider says it has none."""
    try:
        return driver.list_nodes(ex_node_ids=[instance])
    except BaseHTTPError as exc:
        if not_found(exc):
            raise Absent() from None
        raise


class CloudInstancePlugin:
    """Instance/0.5.0 over the nodes libcloud's compute drivers make."""

    def __init__(self, name: str, directory: Path, *,
                 visibility_deadline: float | None = None,
                 retry_seconds: float | None = None) -> None:
        self.name = name
        self.visibility_deadline, retry_seconds = provider_waits(
            "CLOUD", visibility_deadline, retry_seconds)
        self._drivers = Drivers(retry_seconds)
        self._own_name = re.compile(re.escape(name) + r"-[0-9a-f]{12}")
        self._state = VisibilityFile(state_directory(directory) / "state.json", CloudState)
        self._lock = self._state.lock

    # -- Instance/0.5.0 ----------------------------------------------------------------------

    def validate(self, properties: Any) -> None:
        """The properties' shape and names, then whether the provider has the size and the
        image."""
        checked = check_properties(properties)
        self._drivers.size(checked.place, checked.props.size)
        self._drivers.image(checked.place, checked.props.image)

    def provision(self, spec: Spec) -> str:
        checked = check_properties(spec.properties)
        props, place = checked.props, checked.place
        tags = provider_tags.from_spec(spec, check_tags, "cloud",
                                       "the driver's arguments in Properties.Extra")
        if spec.init and checked.user_data_arg is None:
            raise PluginError(f"Spec.Init: driver {props.driver!r} takes no user data, so "
                              "it cannot run an Init; leave Init empty")
        driver = self._drivers.driver(place)
        size = self._drivers.size(place, props.size)
        image = self._drivers.image(place, props.image)
        name = f"{self.name}-{secrets.token_hex(6)}"
        kwargs: dict[str, Any] = {**props.extra, "name": name, "size": size, "image": image}
        if place.tag_style == "metadata":
            kwargs["ex_metadata"] = provider_tags.launch_tags(tags, self.name, spec.logical_id)
        if spec.init and checked.user_data_arg:
            kwargs[checked.user_data_arg] = spec.init
        if checked.takes_token:
            kwargs["ex_clienttoken"] = uuid.uuid4().hex  # a retried launch launches once
        now = time.time()

        def before(state: CloudState, now: float) -> bool:
            state.places[place.key] = place
            if place.tag_style == "name":
                state.named[name] = Named(tags=tags, logical_id=spec.logical_id, since=now)
            return True

        self._state.update(before)
        try:
            node = self._drivers.call(place, "creating a node", _create, driver, kwargs,
                                      passes=transient if checked.takes_token else throttled)
        except PluginError:
            self._state.update(lambda state, now: state.named.pop(name, None) is not None)
            raise
        record = Launched(place=place.key, name=name, tags=tags, logical_id=spec.logical_id,
                          until=now + self.visibility_deadline)

        def add(state: CloudState, now: float) -> bool:
            state.launched[node.id] = record
            return True

        self._state.update(add)
        return str(node.id)

    def _owns(self, place: Place, node: Any) -> bool:
        tags = _node_tags(node)
        if place.tag_style == "metadata":
            return tags.get(provider_tags.OWNER) == self.name
        return bool(self._own_name.fullmatch(node.name or "")) and provider_tags.OWNER not in tags

    def _find(self, instance: str, doing: str) -> tuple[Place, Any] | None:
        """The place and node of one of the plugin's instances, terminated or not; None
        when no node has the ID where the plugin makes nodes; an error for an ID that is
        no node's, or a node the plugin did not make."""
        if not _NODE_ID.fullmatch(instance):
            raise NotFoundError(f"Instance: {instance!r} is not a node ID; cannot {doing} it")
        with self._lock:
            record = self._state.state.launched.get(instance)
            places = list(self._state.state.places.values())
            made_in = self._state.state.places[record.place] if record is not None else None
        others = False
        for place in [made_in] if made_in is not None else places:
            for node in self._lookup(place, instance):
                if self._owns(place, node):
                    return place, node
                others = True
        if others:
            raise NotFoundError(f"Instance: {instance!r} was not made by plugin {self.name}; "
                                f"refusing to {doing} it")
        if record is not None and made_in is not None:  # made here, not listed yet
            return made_in, Node(id=instance, name=record.name, state=NodeState.PENDING,
                                 public_ips=[], private_ips=[],
                                 driver=self._drivers.driver(made_in))
        return None

    def _nowhere(self, instance: str) -> str:
        """Where the plugin looked for a node that it found nowhere."""
        with self._lock:
            places = sorted({str(p) for p in self._state.state.places.values()})
        return (f"no node {instance!r} where plugin {self.name} makes nodes "
                f"({', '.join(places) or 'nowhere yet'})")

    def _lookup(self, place: Place, instance: str) -> list[Any]:
        driver = self._drivers.driver(place)
        if "ex_node_ids" not in parameters(driver.list_nodes):
            nodes = self._drivers.call(place, "listing nodes", driver.list_nodes)
            return [n for n in nodes if n.id == instance]
        try:
            return list(self._drivers.call(place, f"looking up node {instance!r}",
                                           _by_id, driver, instance))
        except Absent:
            return []

    def label(self, instance: str, labels: dict[str, str]) -> None:
        check_tags(labels, "Labels")
        found = self._find(instance, "label")
        if found is None:
            raise NotFoundError(f"Instance: {self._nowhere(instance)}: it is gone, or never "
                                "was; cannot label it")
        place, node = found
        if node.state == NodeState.TERMINATED:
            raise NotFoundError(f"Instance: node {instance!r} is gone (terminated); cannot "
                                "label it")
        if not labels:
            return
        if place.tag_style == "metadata":
            driver = self._drivers.driver(place)
            self._drivers.call(place, f"tagging node {instance!r}", driver.ex_create_tags,
                               node, labels, passes=self._retry_for(instance))

        def relabel(state: CloudState, now: float) -> bool:
            record = state.launched.get(instance)
            if record is not None:
                record.tags = {**record.tags, **labels}
            if place.tag_style == "name":
                named = state.named.setdefault(node.name, Named(tags={}, since=now))
                named.tags = {**named.tags, **labels}
            return True

        self._state.update(relabel)

    def _retry_for(self, instance: str) -> Callable[[BaseException], bool]:
        """What to retry in a call on ``instance``: transient faults, and "no such node"
        too while the node is one this plugin made that the provider does not list yet."""
        with self._lock:
            fresh = instance in self._state.state.launched
        return transient_or_unknown if fresh else transient

    def destroy(self, instance: str) -> None:
        found = self._find(instance, "destroy")
        if found is None:  # nothing to destroy, nothing to forget
            log.info("Instance %s was already gone (%s): nothing to destroy", instance,
                     self._nowhere(instance))
            return
        place, node = found
        if node.state == NodeState.TERMINATED:
            log.info("Instance %s was already gone (terminated): nothing to destroy", instance)
        elif not self._drivers.call(place, f"destroying node {instance!r}",
                                    self._drivers.driver(place).destroy_node, node,
                                    passes=self._retry_for(instance)):
            raise PluginError(f"{place}: the provider did not destroy node {instance!r}")

        def forget(state: CloudState, now: float) -> bool:
            state.launched.pop(instance, None)
            state.named.pop(node.name, None)
            state.terminated[instance] = now + self.visibility_deadline
            return True

        self._state.update(forget)

    def describe_instances(self, tags: dict[str, str], properties: bool) -> list[Description]:
        """The plugin's live nodes that carry every tag, in every place it has made nodes;
        nodes made and not listed yet are added, nodes destroyed and still listed left
        out."""
        with self._lock:
            places = list(self._state.state.places.values())
            named = dict(self._state.state.named)
        listed: dict[str, Description | None] = {}
        present: set[str] = set()
        """Names of the ``name``-style nodes that still exist."""
        for place in places:
            for node, own, logical_id in self._listed(place, tags, named):
                listed.setdefault(node.id, None)
                if place.tag_style == "name" and node.state != NodeState.TERMINATED:
                    present.add(node.name)
                if node.state not in LIVE:
                    continue
                desc = Description(id=node.id, logical_id=logical_id, tags=own)
                if properties:
                    desc.properties = _facts(place, node)
                listed[node.id] = desc

        def tidy(state: CloudState, now: float) -> bool:
            making = {r.name for r in state.launched.values()}
            stale = [n for n, r in state.named.items() if n not in present
                     and n not in making and r.since + self.visibility_deadline <= now]
            for name in stale:
                del state.named[name]
            return bool(stale)

        return self._state.describe(listed, tags,
                                    self._launched_facts if properties else None, tidy=tidy)

    def _launched_facts(self, instance: str, record: Launched) -> dict[str, Any]:
        """What a description with properties tells of a node not listed yet."""
        with self._lock:
            place = self._state.state.places[record.place]
        return {"Name": record.name, "State": "launched", "Driver": place.driver,
                "Region": place.region, "TagStyle": place.tag_style}

    def _listed(self, place: Place, tags: dict[str, str],
                named: dict[str, Named]) -> Iterator[tuple[Any, dict[str, str], str | None]]:
        """The plugin's nodes in ``place``, with their tags and logical IDs: filtered by
        the provider in the ``metadata`` style, by the plugin in the ``name`` style."""
        driver = self._drivers.driver(place)
        if place.tag_style == "metadata":
            owner = provider_tags.filter_literal(self.name)
            filters: dict[str, Any] = {f"tag:{provider_tags.OWNER}": owner,
                                       "instance-state-name": EC2_LIVE}
            filters.update({f"tag:{k}": provider_tags.filter_literal(v)
                            for k, v in tags.items()})
            nodes = self._drivers.call(place, "listing nodes", driver.list_nodes,
                                       ex_filters=filters)
        else:
            nodes = self._drivers.call(place, "listing nodes", driver.list_nodes)
        for node in nodes:
            if not self._owns(place, node):
                continue
            if place.tag_style == "name":
                record = named.get(node.name)
                yield (node, dict(record.tags) if record else {},
                       record.logical_id if record else None)
                continue
            all_tags = _node_tags(node)
            own = {k: v for k, v in provider_tags.without_reserved(all_tags).items()
                   if not (k == NAME_TAG and v == node.name)}
            yield node, own, all_tags.get(provider_tags.LOGICAL_ID)


def _facts(place: Place, node: Any) -> dict[str, Any]:
    """What a description with properties tells of a node."""
    created = node.created_at
    facts = {"Name": node.name, "State": str(node.state), "Driver": place.driver,
             "Region": place.region, "TagStyle": place.tag_style,
             "PublicIPs": list(node.public_ips or []),
             "PrivateIPs": list(node.private_ips or []),
             "CreatedAt": created.isoformat() if created is not None else None}
    return {k: v for k, v in facts.items() if v is not None}
