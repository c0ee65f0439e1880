"""The ``docker`` instance plugin: one Docker container per instance.

The engine is the one ``DOCKER_HOST`` names (``DOCKER_TLS_VERIFY`` and ``DOCKER_CERT_PATH``
are honoured too), else the default socket, reached through the Docker SDK for Python.

Instances
    An instance is a container named ``<plugin>-<12 hex digits>``; that name is its ID.
    Every container the plugin makes carries the label ``infrakit.plugin=<plugin>``: a
    container without it is never described, labelled or destroyed, whatever its name.

Tags
    A spec's tags become the container's labels (beside the two the plugin keeps for
    itself, ``infrakit.plugin`` and ``infrakit.logical_id``, which tags may not use), so
    DescribeInstances filters by label on the engine's side. Docker cannot change the
    labels of an existing container, so Instance.Label keeps the labels it is given in a
    small state file, ``$INFRAKIT_HOME/instance-docker/<plugin>/labels.json``, rewritten
    atomically; what it holds is merged over the container's own labels in every
    description, and a filter on a key that some such label uses is applied by the plugin
    instead of the engine. A container's entry goes when the plugin removes the container.

Liveness
    Only a container that is running (or paused, or being restarted by its own
    ``RestartPolicy``) is described: the group replaces a member that is killed or exits
    at its next pass. A container of the plugin found created and never started is removed
    by the describe that finds it (without force, so a container that came back to life in
    the meantime stays), so none is left behind as an orphan.

Endings
    A container that exited or died is not described, but kept, so that
    Instance.DescribeEnded tells how it ended: its exit status or the signal that killed it
    (``OOMKilled`` too), when it started and finished, and the last lines of its logs. The
    most recent ones stay on the engine (``docker logs`` shows them whole) and older ones
    are removed, so a crash loop leaves a bounded number behind; a container that was seen
    running and then removed behind the plugin's back is reported as such. Both describes
    list the plugin's containers in one call and learn from it; each ending costs one
    inspection and one read of the logs, once. Details in :mod:`.docker_ended`.

Images
    ``Properties.Image`` must be pinned, to a tag other than ``latest`` or to a digest
    (``name@sha256:...`` or an image ID ``sha256:...``), and must already be on the engine:
    the plugin never pulls. Validate and Provision refuse anything else, listing the tags
    the engine holds.

Init and Command
    Without an ``Init`` script the container runs as its image says, with ``Command`` (if
    given) in place of the image's ``CMD``. With one, the entrypoint is
    ``/bin/sh -c INIT``, which runs the script and then ``exec``\\ s ``Command``: the script
    prepares, the command is the container's main process (and gets its signals). The
    image's own ``ENTRYPOINT`` is not run then, and without a ``Command`` the script is the
    whole program: the container lives as long as the script runs. ``Init`` needs
    ``/bin/sh`` in the image.

Destroy
    Stops the container with the grace period of ``Properties.StopTimeout`` (SIGTERM, then
    SIGKILL once it has passed), then removes it with its anonymous volumes. An ended
    container is destroyed the same way, and is no longer reported as ended. An ID of the
    plugin's form that no container has any more (destroyed before, or removed behind the
    plugin's back) is destroyed already: the call succeeds, and the log says it was gone.
    Label of such an ID is refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import docker
import docker.errors
import docker.types
import msgspec

from infrakit.plugins.instance import docker_ended, docker_logs, provider_tags
from infrakit.plugins.instance.docker_ended import LIVE, EndedContainers, Listed
from infrakit.plugins.instance.state import StateFile, state_directory
from infrakit.spi.errors import NotFoundError, PluginError
from infrakit.spi.instance import EndedInstance, InstanceLogs
from infrakit.spi.properties import decode_properties
from infrakit.spi.types import Description, Spec

log = logging.getLogger(__name__)

DEFAULT_ENGINE = "unix:///var/run/docker.sock"
WORKERS = 16
"""Connections kept to the engine: as many as the plugin runtime's worker threads."""

_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_DIGEST = re.compile(r"(.+@)?sha256:[0-9a-f]{64}")
_MEMORY = re.compile(r"[0-9]+[bkmg]?", re.IGNORECASE)


class Mount(msgspec.Struct, rename="pascal", forbid_unknown_fields=True, kw_only=True):
    """A bind mount of a host path, a named volume, or a tmpfs, at ``Target``."""

    target: str
    source: str = ""
    type: Literal["bind", "volume", "tmpfs"] = "bind"
    read_only: bool = False


class RestartPolicy(msgspec.Struct, rename="pascal", forbid_unknown_fields=True,
                    kw_only=True):
    """Docker's own restart policy; the group replaces a container that Docker gives up on."""

    name: Literal["no", "on-failure", "always", "unless-stopped"] = "no"
    maximum_retry_count: int = 0


class DockerProperties(msgspec.Struct, rename="pascal", forbid_unknown_fields=True,
                       kw_only=True):
    """An instance's ``Properties``: what container to run and how."""

    image: str
    command: list[str] | None = None
    env: dict[str, str] | None = None
    mounts: list[Mount] | None = None
    network_mode: str = ""
    """``none``, ``host``, ``bridge``, ``container:<name>`` or a network's name; empty:
    the engine's default."""
    memory: int | str | None = None
    """A limit in bytes, or a number with a unit: ``64m``, ``1g``."""
    cpus: float | None = msgspec.field(default=None, name="CPUs")
    pids_limit: int | None = None
    restart_policy: RestartPolicy | None = None
    stop_timeout: int = 10
    """Seconds Destroy waits after SIGTERM before it kills the container."""

    def check(self) -> None:
        """What the types alone do not say."""
        if not self.image:
            raise PluginError("Properties.Image: must name an image")
        if self.command is not None and not self.command:
            raise PluginError("Properties.Command: must not be an empty list")
        for key in self.env or {}:
            if not key or "=" in key:
                raise PluginError(f"Properties.Env: {key!r} is not a variable name")
        for i, mount in enumerate(self.mounts or []):
            if mount.type != "tmpfs" and not mount.source:
                raise PluginError(f"Properties.Mounts[{i}].Source: a {mount.type} mount "
                                  "needs a source")
        if isinstance(self.memory, str) and not _MEMORY.fullmatch(self.memory):
            raise PluginError(f"Properties.Memory: {self.memory!r} is neither a number of "
                              "bytes nor a size such as '64m' or '1g'")
        if isinstance(self.memory, int) and self.memory <= 0:
            raise PluginError("Properties.Memory: must be positive")
        if self.cpus is not None and self.cpus <= 0:
            raise PluginError("Properties.CPUs: must be positive")
        if self.pids_limit is not None and self.pids_limit <= 0:
            raise PluginError("Properties.PidsLimit: must be positive")
        policy = self.restart_policy
        if policy is not None and policy.maximum_retry_count and policy.name != "on-failure":
            raise PluginError("Properties.RestartPolicy.MaximumRetryCount: only allowed with "
                              "Name 'on-failure'")
        if self.stop_timeout < 0:
            raise PluginError("Properties.StopTimeout: must not be negative")


class LabelState(msgspec.Struct, rename="pascal", kw_only=True):
    """The state file: the labels Instance.Label gave each container, by instance ID."""

    labels: dict[str, dict[str, str]] = {}


def pinned(image: str) -> bool:
    """Whether ``image`` names a tag other than ``latest``, or a digest."""
    if _DIGEST.fullmatch(image):
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest"


def _host_config(api: Any, props: DockerProperties) -> Any:
    """The engine's settings of a container of ``props`` that are the host's business:
    network, mounts, limits, restart policy."""
    return api.create_host_config(
        network_mode=props.network_mode or None,
        mounts=[docker.types.Mount(m.target, m.source or None, type=m.type,
                                   read_only=m.read_only) for m in props.mounts or []],
        mem_limit=props.memory,
        nano_cpus=round(props.cpus * 1e9) if props.cpus is not None else None,
        pids_limit=props.pids_limit,
        restart_policy=(msgspec.to_builtins(props.restart_policy)
                        if props.restart_policy is not None else None),
    )


def _reaped(api: Any, container_id: str) -> bool:
    """Remove a container of the plugin that never started or ended long enough ago; whether
    it was removed. Not forced: one that was started again meanwhile is refused by the
    engine, and stays."""
    try:
        api.remove_container(container_id, v=True)
    except (docker.errors.DockerException, OSError):  # gone already, being removed,
        return False  # running again, or the engine went away: the next describe tries again
    return True


def _check_tags(tags: dict[str, str], where: str) -> None:
    for key in tags:
        provider_tags.refuse_reserved(key, where)
        if not key or "=" in key:
            raise PluginError(f"{where}: {key!r} is not a label key (empty, or has '=')")


class DockerInstancePlugin:
    """Instance/0.5.0 over the containers of one Docker engine."""

    def __init__(self, name: str, directory: Path) -> None:
        if not _NAME.fullmatch(name):
            raise PluginError(f"plugin name {name!r} cannot start a container name "
                              "(letters, digits, '_', '.', '-')")
        self.name = name
        self.engine = os.environ.get("DOCKER_HOST") or DEFAULT_ENGINE
        self._id = re.compile(re.escape(name) + r"-[0-9a-f]{12}")
        self._state = StateFile(state_directory(directory) / "labels.json", LabelState)
        self._lock = self._state.lock
        self._starting: set[str] = set()
        """Instances between create and start: a describe must not take them for debris."""
        self._facts: dict[str, dict[str, Any]] = {}
        """What an inspect says of each running container, by container ID: the list of
        containers lacks it, and a describe with properties runs on every group pass."""
        self._endings = EndedContainers()
        self._client: Any = None
        self._client_lock = threading.Lock()

    def _api(self) -> Any:
        """The SDK's low-level client, made on first use, so that the plugin starts (and
        answers with a clear error) while the engine is down."""
        with self._client_lock:
            if self._client is None:
                with self._engine("connecting"):
                    self._client = docker.from_env(version="auto",
                                                   max_pool_size=WORKERS).api
            return self._client

    @contextlib.contextmanager
    def _engine(self, doing: str) -> Iterator[None]:
        """Turn the SDK's errors into a :class:`PluginError` that says what failed."""
        try:
            yield
        except docker.errors.APIError as exc:
            raise PluginError(f"Docker engine at {self.engine}: {doing}: "
                              f"{exc.explanation or exc}") from None
        except (docker.errors.DockerException, OSError) as exc:  # requests' errors too
            raise PluginError(f"Docker engine at {self.engine} is unreachable ({doing}): "
                              f"{exc}") from None

    def _local_tags(self) -> str:
        with self._engine("listing images"):
            images = self._api().images()
        tags = sorted(t for i in images for t in i.get("RepoTags") or []
                      if t != "<none>:<none>")
        return ", ".join(tags) if tags else "none"

    def _missing_image(self, image: str) -> PluginError:
        return PluginError(
            f"Properties.Image: {image!r} is not on the Docker engine at {self.engine}, and "
            f"images are never pulled: build, import or load it first; tags present "
            f"locally: {self._local_tags()}")

    def _properties(self, properties: Any) -> DockerProperties:
        props = decode_properties(properties, DockerProperties)
        props.check()
        if not pinned(props.image):
            raise PluginError(
                f"Properties.Image: {props.image!r} is not pinned: name a tag other than "
                f"'latest', or a digest (images are never pulled); tags present locally: "
                f"{self._local_tags()}")
        return props

    def _forget(self, instance: str, container_id: str) -> None:
        """Drop what the plugin kept about a container it removed."""
        with self._lock:
            self._facts.pop(container_id, None)
        self._state.update(lambda state, now: state.labels.pop(instance, None) is not None)

    # -- Instance/0.5.0 ----------------------------------------------------------------------

    def validate(self, properties: Any) -> None:
        props = self._properties(properties)
        with self._engine(f"inspecting image {props.image!r}"):
            try:
                self._api().inspect_image(props.image)
            except docker.errors.NotFound:
                raise self._missing_image(props.image) from None

    def provision(self, spec: Spec) -> str:
        props = self._properties(spec.properties)
        tags = provider_tags.from_spec(spec, _check_tags, "docker", "Properties.Mounts")
        labels = provider_tags.launch_tags(tags, self.name, spec.logical_id)
        api = self._api()
        with self._engine("preparing the container's settings"):
            host_config = _host_config(api, props)
        entrypoint = (["/bin/sh", "-c", f'{spec.init}\nexec "$@"', "infrakit-init"]
                      if spec.init else None)
        instance = f"{self.name}-{secrets.token_hex(6)}"
        with self._lock:
            self._starting.add(instance)
        try:
            with self._engine(f"creating container {instance}"):
                try:
                    made = api.create_container(
                        props.image, command=props.command, entrypoint=entrypoint,
                        environment=props.env, labels=labels, name=instance,
                        host_config=host_config, stop_timeout=props.stop_timeout)
                except docker.errors.ImageNotFound:
                    raise self._missing_image(props.image) from None
            try:
                with self._engine(f"starting container {instance}"):
                    api.start(made["Id"])
            except PluginError:
                with contextlib.suppress(docker.errors.DockerException, OSError):
                    api.remove_container(made["Id"], force=True, v=True)
                raise
        finally:
            with self._lock:
                self._starting.discard(instance)
        return instance

    def _owned(self, instance: str, doing: str) -> dict[str, Any] | None:
        """The inspection of one of the plugin's containers; None when no container has
        the name (it is gone); an error for a name of another form or a container the
        plugin did not make."""
        if not self._id.fullmatch(instance):
            raise NotFoundError(f"Instance: {instance!r} is not an instance of plugin "
                                f"{self.name} (its IDs are {self.name}-<12 hex digits>); "
                                f"cannot {doing} it")
        with self._engine(f"inspecting container {instance}"):
            try:
                info: dict[str, Any] = self._api().inspect_container(instance)
            except docker.errors.NotFound:
                return None
        if (info["Config"].get("Labels") or {}).get(provider_tags.OWNER) != self.name:
            raise NotFoundError(f"Instance: container {instance!r} was not made by plugin "
                                f"{self.name} (it lacks the label {provider_tags.OWNER}="
                                f"{self.name}); refusing to {doing} it")
        return info

    def label(self, instance: str, labels: dict[str, str]) -> None:
        _check_tags(labels, "Labels")
        if self._owned(instance, "label") is None:
            raise NotFoundError(f"Instance: no container {instance!r} on the Docker engine "
                                f"at {self.engine} (it is gone, or never was); cannot label it")
        with self._engine("listing containers"):
            present = {docker_ended.instance_of(c, self._id) for c in self._api().containers(
                all=True, filters={"label": f"{provider_tags.OWNER}={self.name}"})}

        def relabel(state: LabelState, now: float) -> bool:
            kept = {i: ls for i, ls in state.labels.items() if i in present}
            kept[instance] = {**kept.get(instance, {}), **labels}
            state.labels = kept  # entries of containers removed behind our back go too
            return True

        self._state.update(relabel)

    def destroy(self, instance: str) -> None:
        with self._endings.destroying(instance):  # ended or not, it is forgotten after
            info = self._owned(instance, "destroy")
            if info is None:
                self._forget(instance, "")  # what Label kept of it
                log.info("Instance %s was already gone (no container has its name): nothing "
                         "to destroy", instance)
                return
            cid = info["Id"]
            grace = info["Config"].get("StopTimeout")
            with self._engine(f"stopping container {instance}"), \
                    contextlib.suppress(docker.errors.NotFound):
                self._api().stop(cid, timeout=10 if grace is None else grace)
            with self._engine(f"removing container {instance}"), \
                    contextlib.suppress(docker.errors.NotFound):
                self._api().remove_container(cid, force=True, v=True)
            self._forget(instance, cid)

    def describe_instances(self, tags: dict[str, str], properties: bool) -> list[Description]:
        """The plugin's live containers that carry every tag."""
        found: list[Description] = []
        for instance, c, merged in self._list(tags):
            state = c["State"]
            if state not in LIVE or not tags.items() <= merged.items():
                continue
            desc = Description(id=instance, tags=merged,
                               logical_id=(c.get("Labels") or {}).get(provider_tags.LOGICAL_ID))
            if properties:
                desc.properties = {"ContainerID": c["Id"], "Image": c["Image"],
                                   "ImageID": c["ImageID"], "State": state,
                                   "Status": c["Status"], **self._facts_of(c)}
            found.append(desc)
        return found

    def describe_ended(self, tags: dict[str, str]) -> list[EndedInstance]:
        """How the plugin's containers that carried every tag ended, when they ended
        without a Destroy."""
        self._list(tags)
        return self._endings.report(tags)

    def logs(self, instance: str, offset: str, tail: int | None, previous: bool) -> InstanceLogs:
        """The container's output, from the engine: see :mod:`.docker_logs`."""
        return docker_logs.serve(self, instance, offset, tail, previous)

    def _list(self, tags: dict[str, str]) -> list[Listed]:
        """The plugin's containers, in one listing. The engine filters on the tags that no
        Instance.Label has set (the caller on the others); what ended is learnt on the way,
        and containers created but never started are removed, as are exited ones past
        those kept."""
        with self._lock:
            overrides = {i: dict(ls) for i, ls in self._state.state.labels.items()}
        relabelled = {k for ls in overrides.values() for k in ls}
        on_engine = {provider_tags.OWNER: self.name, **{
            k: v for k, v in tags.items() if k not in relabelled and "=" not in k}}
        with self._endings.lock:
            with self._engine("listing containers"):
                listed = self._api().containers(all=True, filters={
                    "label": [f"{k}={v}" for k, v in on_engine.items()]})
            with self._lock:  # after the listing: a container listed as created was either
                starting = set(self._starting)  # still starting then, or is running now
            mine, debris = docker_ended.sort_out(listed, self._id, starting, overrides)
            debris += self._endings.sweep(mine, on_engine, self._learn)
        for instance, cid in debris:
            if _reaped(self._api(), cid):
                self._forget(instance, cid)
        running = self._endings.running()
        with self._lock:  # an ended container's facts are of no use any more
            self._facts = {cid: f for cid, f in self._facts.items() if cid in running}
        return mine

    def _learn(self, item: Listed) -> EndedInstance | None:
        with self._engine(f"inspecting container {item.instance}, which ended"):
            return docker_ended.learn(self._api(), item)

    def _facts_of(self, container: dict[str, Any]) -> dict[str, Any]:
        """When a container was created and last started, and how often Docker restarted
        it: inspected once per run of the container."""
        cid = container["Id"]
        running = container["State"] == "running"
        with self._lock:
            if running:
                facts = self._facts.get(cid)
            else:  # it will start anew: inspect it again then
                facts = None
                self._facts.pop(cid, None)
        if facts is not None:
            return facts
        with self._engine(f"inspecting container {cid[:12]}"):
            try:
                info = self._api().inspect_container(cid)
            except docker.errors.NotFound:  # removed since it was listed
                return {}
        state = info["State"]
        facts = {"Created": info["Created"], "StartedAt": state["StartedAt"],
                 "RestartCount": info["RestartCount"]}
        if running:
            with self._lock:
                self._facts[cid] = facts
        return facts
