"""What ``instance-redfish`` decides without a BMC: the spec's Properties checked, the
claims it holds on systems (its state, written atomically before anything is done to a
system), and which free system a spec gets."""

from __future__ import annotations

import fnmatch
from collections import Counter
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

from infrakit.plugins.instance.redfish_bmc import Facts
from infrakit.plugins.instance.redfish_pool import Match, Pool, combine, describe_match
from infrakit.spi.errors import PluginError
from infrakit.spi.properties import decode_properties

Phase = Literal["claimed", "on", "stopping", "ended"]
"""``claimed``: taken, being started (its power may change under the plugin); ``on``:
started, so a power off is news; ``stopping``: being destroyed; ``ended``: powered off or
removed outside the plugin, held out of the pool until its instance is destroyed."""


class RedfishProperties(msgspec.Struct, rename="pascal", forbid_unknown_fields=True,
                        kw_only=True):
    """An instance's ``Properties``: which system (``ServerTemplate`` and the matching
    rules), how it boots, and how long it may take to shut down."""

    server_template: str = ""
    min_cpus: int = msgspec.field(default=0, name="MinCPUs")
    min_memory_gib: float = msgspec.field(default=0, name="MinMemoryGiB")
    model: str = ""
    sku: str = msgspec.field(default="", name="SKU")
    boot_image: str = ""
    """An http(s) URL of an ISO, inserted as virtual media, booted once from CD."""
    boot: Literal["", "Cd", "Pxe"] = ""
    """``Pxe``: boot once from the network. ``Cd`` only with a BootImage (its default)."""
    stop_grace: float = 30.0
    """Seconds a graceful shutdown may take before Destroy forces the power off."""


class Checked(msgspec.Struct, kw_only=True):
    props: RedfishProperties
    match: Match
    boot: str
    """``Cd``, ``Pxe`` or ``""`` (no override: the system boots as it is set to)."""


def check_properties(properties: Any, pool: Pool) -> Checked:
    """Everything about Properties that needs no call to a BMC."""
    props = decode_properties(properties, RedfishProperties)
    template = None
    if props.server_template:
        template = pool.server_templates.get(props.server_template)
        if template is None:
            known = ", ".join(sorted(pool.server_templates)) or "none"
            raise PluginError(f"Properties.ServerTemplate: {props.server_template!r} is not "
                              f"a template of the pool (its ServerTemplates: {known})")
    for field, value in (("MinCPUs", props.min_cpus), ("MinMemoryGiB", props.min_memory_gib),
                         ("StopGrace", props.stop_grace)):
        if value < 0 or value != value:
            raise PluginError(f"Properties.{field}: {value!r} must not be negative")
    if props.boot_image:
        parts = urlsplit(props.boot_image)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise PluginError(f"Properties.BootImage: {props.boot_image!r} is not an http:// "
                              "or https:// URL; a BMC's virtual media fetches the image "
                              "over HTTP(S)")
        if props.boot == "Pxe":
            raise PluginError("Properties.Boot: 'Pxe' cannot go with a BootImage (the image "
                              "boots from the virtual CD); give one of the two")
    elif props.boot == "Cd":
        raise PluginError("Properties.Boot: 'Cd' needs a BootImage to insert; give "
                          "Properties.BootImage, or Boot: Pxe")
    own = Match(min_cpus=props.min_cpus, min_memory_gib=props.min_memory_gib,
                model=props.model, sku=props.sku)
    boot = "Cd" if props.boot_image else props.boot
    return Checked(props=props, match=combine(template, own), boot=boot)


class Claim(msgspec.Struct, rename="pascal", kw_only=True):
    """A system taken by one instance."""

    bmc: str = msgspec.field(name="BMC")
    system: str
    """The system's Redfish ``Id``."""
    path: str
    uuid: str = msgspec.field(default="", name="UUID")
    phase: Phase = "claimed"
    tags: dict[str, str] = {}
    logical_id: str | None = msgspec.field(default=None, name="LogicalID")
    boot_image: str = ""
    boot: str = ""
    stop_grace: float = 30.0
    since: float = 0.0
    ended: float = 0.0
    reason: str = ""
    """Why it ended, in words (phase ``ended``)."""


class RedfishState(msgspec.Struct, rename="pascal", kw_only=True):
    next_id: int = msgspec.field(default=1, name="NextID")
    claims: dict[str, Claim] = {}


def fits(match: Match, system: Facts) -> str:
    """Why ``system`` does not fit ``match`` (a key of :func:`choose`'s counts), or ""."""
    if (match.min_cpus and system.cpus is None) or (match.min_memory_gib
                                                     and system.memory_gib is None):
        return "not telling their size"
    if (system.cpus or 0) < match.min_cpus or (system.memory_gib or 0) < match.min_memory_gib:
        return "too small"
    if match.model and not fnmatch.fnmatchcase(system.model, match.model):
        return "of another model"
    if match.sku and not fnmatch.fnmatchcase(system.sku, match.sku):
        return "of another SKU"
    return ""


def choose(checked: Checked, inventories: dict[str, dict[str, Facts]],
           claims: dict[str, Claim], faults: dict[str, str]) -> tuple[str, Facts]:
    """The free system for a spec: of those that fit, the smallest (fewest CPUs, then
    least memory), so that big systems stay free for specs that need them. Without one,
    an error that counts why each system was passed over."""
    taken = {(c.bmc, c.path): c for c in claims.values()}
    why: Counter[str] = Counter()
    fitting: list[tuple[float, float, str, str, Facts]] = []
    for bmc, systems in inventories.items():
        for system in systems.values():
            claim = taken.get((bmc, system.path))
            if claim is not None:
                why["ended outside the plugin (destroy its instance to free it)"
                    if claim.phase == "ended" else "claimed"] += 1
                continue
            unfit = fits(checked.match, system)
            if not unfit and checked.boot == "Cd" and not system.virtual_media:
                unfit = "without virtual media"
            if unfit:
                why[unfit] += 1
                continue
            fitting.append((system.cpus or 0, system.memory_gib or 0, bmc, system.id, system))
    if fitting:
        best = min(fitting)
        return best[2], best[4]
    counts = ", ".join(f"{n} {reason}" for reason, n in sorted(why.items(),
                                                               key=lambda i: (-i[1], i[0])))
    parts = [counts or "the pool's BMCs list no systems"]
    parts += [fault for _, fault in sorted(faults.items())]  # each names its BMC
    raise PluginError(f"no free system matching {describe_match(checked.match)}: "
                      f"{'; '.join(parts)}")
