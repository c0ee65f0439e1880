"""The ``redfish`` instance plugin: physical servers, taken from a pool of Redfish services.

Every server vendor's BMC (iLO, iDRAC, XClarity, OpenBMC) speaks DMTF Redfish, so one
plugin drives any vendor's servers. An instance is a system of the pool that the plugin
has claimed; its ID is ``<BMC name>-<n>``, never reused.

Pool
    The BMCs, their credentials, named server templates and where user data goes: see
    :mod:`infrakit.plugins.instance.redfish_pool`. Never in a spec, never logged.

Properties
    ``ServerTemplate`` (a template of the pool), ``MinCPUs``, ``MinMemoryGiB``, ``Model``
    and ``SKU`` (shell patterns: ``PowerEdge R7*``), over the template's rules; the boot
    source: ``BootImage`` (an http(s) URL of an ISO, inserted as virtual media and booted
    once from CD) or ``Boot: Pxe`` (booted once from the network), or neither (the system
    boots as it is set to); ``StopGrace``, the seconds a graceful shutdown may take.

Provision
    Reads the pool's systems, picks the smallest free one that fits, and records the claim
    in ``state.json`` (written atomically) before anything is done to it, so two
    provisions never take one system, even across a crash. Then it sets the boot source,
    publishes the Init (below), powers the system on (or restarts it) and waits until the
    BMC reports it on. If any step fails, the claim is rolled back (the power is forced
    off, the media ejected, the claim released) and the error names the BMC. When no free
    system fits, the error counts why each one was passed over.

Init
    A BMC has no channel for user data, so the plugin publishes it where the boot image
    can fetch it: with ``UserData.Directory`` in the pool, the Init is written to
    ``<Directory>/<system UUID>/user-data`` (and ``meta-data`` beside it, in cloud-init's
    NoCloud layout), for a web server to serve. An image finds it by the system's SMBIOS
    UUID: iPXE's ``${uuid}``, GRUB's ``smbios --type 1 --get-uuid 8``, cloud-init's
    ``ds=nocloud-net;s=http://HOST/PATH/<uuid>/``. A spec with an Init and no such
    directory is refused.

Describe
    One read of each BMC's systems (a collection with ``$expand``, where the service has
    it; else one read per claimed system) gives each instance's ``PowerState`` and
    ``Health`` (the Redfish ``Status``). A started system that is found powered off, or
    that the BMC no longer lists, has ended outside the plugin: it is no longer described,
    ``DescribeEnded`` tells how it ended, and it is held out of the pool until its
    instance is destroyed (someone powered it off; taking it back at once would be rude).
    A BMC that cannot be read leaves its instances described from the state, power
    ``Unknown``, rather than lost.

Destroy
    A graceful shutdown, then a forced power off after ``StopGrace``; the media ejected,
    the user data removed, the claim released.

Label
    Tags are kept in the state.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import msgspec
import sushy

from infrakit.plugins.instance import provider_tags
from infrakit.plugins.instance.redfish_actions import (
    OFF,
    eject,
    power_off,
    power_on,
    publish,
    set_boot,
    unpublish,
)
from infrakit.plugins.instance.redfish_bmc import Connections, Facts, wait_power
from infrakit.plugins.instance.redfish_claims import (
    Checked,
    Claim,
    RedfishState,
    check_properties,
    choose,
)
from infrakit.plugins.instance.redfish_pool import load_pool
from infrakit.plugins.instance.state import StateFile, state_directory
from infrakit.settings import REDFISH, SettingError
from infrakit.spi.errors import NotFoundError, PluginError
from infrakit.spi.instance import EndedInstance
from infrakit.spi.types import Description, Spec

log = logging.getLogger(__name__)


class RedfishInstancePlugin:
    """Instance/0.5.0 over the systems of a pool of Redfish services."""

    def __init__(self, name: str, directory: Path, *,
                 power_timeout: float | None = None) -> None:
        self.name = name
        self.directory = state_directory(directory)
        self.pool, source = load_pool(self.directory)
        try:
            self.power_timeout = (REDFISH["power_timeout"].read() if power_timeout is None
                                  else power_timeout)
        except SettingError as exc:
            raise PluginError(str(exc)) from None
        self._state = StateFile(self.directory / "state.json", RedfishState)
        self._bmcs = Connections()
        self._faults: dict[str, str] = {}
        """The last fault of each BMC that describe could not read, to log each once."""
        self._id = re.compile(r"[^:/\s]+-(?P<n>[0-9]{1,18})")
        log.info("pool from %s: BMCs %s", source, ", ".join(b.name for b in self.pool.bmcs))

    # -- Instance/0.5.0 ----------------------------------------------------------------------

    def validate(self, properties: Any) -> None:
        """The properties' shape; with a BootImage, also that every BMC of the pool has
        virtual media (a BMC that lacks it could never boot the image)."""
        checked = check_properties(properties, self.pool)
        if checked.boot != "Cd":
            return
        for bmc in self.pool.bmcs:
            systems = self._bmcs.systems(bmc)
            if any(not s.virtual_media for s in systems.values()):
                raise PluginError(
                    f"Properties.BootImage: BMC {bmc.name!r} does not support virtual media "
                    "(its systems have no VirtualMedia), so it cannot boot an image; use "
                    "Boot: Pxe, or a pool without it")

    def provision(self, spec: Spec) -> str:
        checked = check_properties(spec.properties, self.pool)
        if spec.init and self.pool.user_data is None:
            raise PluginError("Spec.Init: the pool file gives no UserData.Directory, so "
                              "there is nowhere to publish the Init for the boot image; add "
                              "one (see the plugin's docs), or leave Init empty")
        tags = provider_tags.from_spec(spec, _check_tags, "redfish",
                                       "the servers' own tools")
        inventories, faults = self._inventory()
        made: list[tuple[str, Claim]] = []

        def claim(state: RedfishState, now: float) -> bool:
            bmc, system = choose(checked, inventories, state.claims, faults)
            iid = f"{bmc}-{state.next_id}"
            state.next_id += 1
            state.claims[iid] = Claim(
                bmc=bmc, system=system.id, path=system.path, uuid=system.uuid, tags=tags,
                logical_id=spec.logical_id, boot_image=checked.props.boot_image,
                boot=checked.boot, stop_grace=checked.props.stop_grace, since=now)
            made.append((iid, state.claims[iid]))
            return True

        self._state.update(claim)  # durable before anything is done to the system
        [(iid, record)] = made
        try:
            self._start(iid, record, checked, spec.init)
        except PluginError as exc:
            self._roll_back(iid, record, str(exc))
            raise
        self._set_phase(iid, "claimed", "on")
        return iid

    def label(self, instance: str, labels: dict[str, str]) -> None:
        _check_tags(labels, "Labels")

        def relabel(state: RedfishState, now: float) -> bool:
            record = state.claims.get(instance)
            if record is None or record.phase == "ended":
                raise NotFoundError(f"Instance: {instance!r} is gone (destroyed, or ended "
                                    "outside the plugin); cannot label it")
            record.tags = {**record.tags, **labels}
            return True

        self._known(instance, "label")
        self._state.update(relabel)

    def destroy(self, instance: str) -> None:
        self._known(instance, "destroy")
        with self._state.lock:
            record = self._state.state.claims.get(instance)
        if record is None:
            log.info("Instance %s was already destroyed: nothing to do", instance)
            return
        if record.phase != "ended":
            self._set_phase(instance, record.phase, "stopping")
        bmc = self.pool.bmc(record.bmc)
        with self._bmcs.talking(bmc, f"stopping system {record.system}") as client:
            try:
                system = client.get_system(record.path)
            except sushy.exceptions.ResourceNotFoundError:
                log.info("Instance %s: BMC %s no longer lists system %s: releasing it",
                         instance, record.bmc, record.system)
            else:
                power_off(system, record.stop_grace, self.power_timeout,
                          f"BMC {bmc.name!r}: system {record.system}")
                if record.boot_image:
                    eject(system)
        self._release(instance, record)

    def describe_instances(self, tags: dict[str, str], properties: bool) -> list[Description]:
        """Claimed systems that carry every tag, as their BMCs report them now."""
        with self._state.lock:
            live = {i: c for i, c in self._state.state.claims.items() if c.phase != "ended"}
        by_bmc: dict[str, list[Claim]] = {}
        for record in live.values():
            by_bmc.setdefault(record.bmc, []).append(record)
        seen: dict[str, dict[str, Facts]] = {}
        for name, records in by_bmc.items():
            try:
                seen[name] = self._bmcs.systems(self.pool.bmc(name), [r.path for r in records])
            except PluginError as exc:
                self._fault(name, str(exc))
            else:
                self._fault(name, "")
        ended = self._ended(live, seen)
        wanted = tags.items()
        out = []
        for iid, record in live.items():
            if iid in ended or not wanted <= record.tags.items():
                continue
            facts = seen.get(record.bmc, {}).get(record.path)
            desc = Description(id=iid, logical_id=record.logical_id, tags=dict(record.tags))
            if properties:
                desc.properties = _properties(record, facts)
            out.append(desc)
        return out

    def describe_ended(self, tags: dict[str, str]) -> list[EndedInstance]:
        """The systems that were powered off or removed outside the plugin."""
        with self._state.lock:
            ended = [(i, c) for i, c in self._state.state.claims.items() if c.phase == "ended"]
        wanted = tags.items()
        return [EndedInstance(id=i, logical_id=c.logical_id, tags=dict(c.tags),
                              reason=c.reason, crashed=False, started=c.since, ended=c.ended)
                for i, c in ended if wanted <= c.tags.items()]

    # -- steps -------------------------------------------------------------------------------

    def _inventory(self) -> tuple[dict[str, dict[str, Facts]], dict[str, str]]:
        """Every BMC's systems; the fault of each BMC that could not be read."""
        inventories, faults = {}, {}
        for bmc in self.pool.bmcs:
            try:
                inventories[bmc.name] = self._bmcs.systems(bmc)
            except PluginError as exc:
                faults[bmc.name] = str(exc)
                log.warning("%s", exc)
        return inventories, faults

    def _start(self, iid: str, record: Claim, checked: Checked, init: str) -> None:
        """Boot source, user data, power on; waits until the BMC reports it on."""
        bmc = self.pool.bmc(record.bmc)
        with self._bmcs.talking(bmc, f"starting system {record.system}") as client:
            system = client.get_system(record.path)
            set_boot(system, checked, f"BMC {bmc.name!r}: system {record.system}")
            if init:
                assert self.pool.user_data is not None
                publish(Path(self.pool.user_data.directory), iid, record, init)
            # a fresh object: polling the one that read the media would read it again too
            power_on(client.get_system(record.path), self.power_timeout,
                     f"BMC {bmc.name!r}: system {record.system}")

    def _roll_back(self, iid: str, record: Claim, why: str) -> None:
        """Undo a provision that failed: power forced off, media ejected, claim released."""
        log.warning("Instance %s: provision failed, rolling the claim on system %s of BMC "
                    "%s back: %s", iid, record.system, record.bmc, why)
        bmc = self.pool.bmc(record.bmc)
        try:
            with self._bmcs.talking(bmc, f"rolling back system {record.system}") as client:
                system = client.get_system(record.path)
                if wait_power(system, lambda s: s in OFF, 0) is None:
                    system.reset_system(sushy.RESET_FORCE_OFF)
                if record.boot_image:
                    eject(system)
        except PluginError as exc:
            log.warning("Instance %s: %s (the system is released all the same)", iid, exc)
        self._release(iid, record)

    def _release(self, iid: str, record: Claim) -> None:
        self._unpublish(record)
        self._state.update(lambda state, now: state.claims.pop(iid, None) is not None)
        log.info("Instance %s: system %s of BMC %s returned to the pool", iid, record.system,
                 record.bmc)

    def _unpublish(self, record: Claim) -> None:
        if self.pool.user_data is not None:
            unpublish(Path(self.pool.user_data.directory), record)

    def _ended(self, live: dict[str, Claim], seen: dict[str, dict[str, Facts]]) -> set[str]:
        """Mark the started systems found off, or no longer listed, as ended."""
        found: dict[str, str] = {}
        for iid, record in live.items():
            if record.phase != "on" or record.bmc not in seen:
                continue
            facts = seen[record.bmc].get(record.path)
            if facts is None:
                found[iid] = f"BMC {record.bmc} no longer lists system {record.system}"
            elif facts.power in OFF:
                found[iid] = (f"system {record.system} of BMC {record.bmc} was powered off "
                              "outside the plugin")
        if not found:
            return set()

        def mark(state: RedfishState, now: float) -> bool:
            for iid, why in found.items():
                record = state.claims.get(iid)
                if record is not None and record.phase == "on":  # not being destroyed
                    record.phase, record.reason, record.ended = "ended", why, now
                    log.warning("Instance %s ended: %s; its system is held out of the pool "
                                "until the instance is destroyed", iid, why)
            return True

        self._state.update(mark)
        with self._state.lock:
            claims = self._state.state.claims
            return {i for i in found if i in claims and claims[i].phase == "ended"}

    def _set_phase(self, iid: str, was: str, phase: Any) -> None:
        def change(state: RedfishState, now: float) -> bool:
            record = state.claims.get(iid)
            if record is None or record.phase != was:
                return False
            record.phase = phase
            return True

        self._state.update(change)

    def _known(self, instance: str, doing: str) -> None:
        """Refuse an ID this plugin never handed out."""
        m = self._id.fullmatch(instance)
        with self._state.lock:
            known = instance in self._state.state.claims or (
                m is not None and int(m["n"]) < self._state.state.next_id)
        if not known:
            raise NotFoundError(f"Instance: {instance!r} is not an instance of plugin "
                                f"{self.name}; refusing to {doing} it")

    def _fault(self, bmc: str, fault: str) -> None:
        if self._faults.get(bmc, "") != fault:
            if fault:
                log.warning("%s; its instances are described from the state", fault)
            else:
                log.info("BMC %r answers again", bmc)
            self._faults[bmc] = fault


def _check_tags(tags: dict[str, str], where: str) -> None:
    for key in tags:
        if not key:
            raise PluginError(f"{where}: a tag key may not be empty")


def _properties(record: Claim, facts: Facts | None) -> dict[str, Any]:
    """What a description with properties tells of a claimed system."""
    out: dict[str, Any] = {"BMC": record.bmc, "System": record.system, "UUID": record.uuid,
                           "Phase": record.phase, "BootImage": record.boot_image,
                           "Boot": record.boot, "PowerState": "Unknown", "Health": "Unknown"}
    if facts is not None:
        out.update({"Name": facts.name, "PowerState": facts.power, "Health": facts.health,
                    "CPUs": facts.cpus, "MemoryGiB": facts.memory_gib, "Model": facts.model,
                    "SKU": facts.sku})
    return {k: v for k, v in msgspec.to_builtins(out).items() if v != ""}
