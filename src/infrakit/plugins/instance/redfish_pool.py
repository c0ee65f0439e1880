"""The pool of ``instance-redfish``: which Redfish services (BMCs, or aggregators) hold the
servers, how to log in to each, the named server templates, and where user data goes.

It comes from a pool file (YAML or JSON) that only its owner may read, or, for one BMC,
from the environment; never from a spec. A pool file that others may read is refused,
since it holds passwords. Credentials are kept in memory only: they are never written to
the plugin's state and never logged, and a BMC is named in messages by its ``Name``, never
by its URL (which may carry a user name).

Pool file::

    BMCs:
      - Name: rack1                   # how messages and instances name it
        URL: https://10.0.0.21        # the service; /redfish/v1 is found under it
        Username: infrakit
        Password: "..."
        Verify: true                  # TLS: true, false, or a CA bundle's path
    ServerTemplates:                  # optional: named bundles of matching rules
      big: {MinCPUs: 32, MinMemoryGiB: 256, Model: "PowerEdge R7*"}
    UserData:                         # optional: where a spec's Init is published
      Directory: /srv/www/infrakit
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import msgspec
import yaml

from infrakit.settings import REDFISH
from infrakit.spi.errors import PluginError
from infrakit.spi.strict import decode_strict


class Match(msgspec.Struct, rename="pascal", forbid_unknown_fields=True, kw_only=True,
            omit_defaults=True):
    """What a system must have: the matching rules of Properties and of templates."""

    min_cpus: int = msgspec.field(default=0, name="MinCPUs")
    min_memory_gib: float = msgspec.field(default=0, name="MinMemoryGiB")
    model: str = ""
    """A shell-style pattern (``PowerEdge R7*``) the system's ``Model`` must match."""
    sku: str = msgspec.field(default="", name="SKU")
    """A shell-style pattern the system's ``SKU`` must match."""


class BMC(msgspec.Struct, rename="pascal", forbid_unknown_fields=True, kw_only=True):
    name: str
    url: str = msgspec.field(name="URL")
    username: str = ""
    password: str = ""
    verify: bool | str = True

    def __repr__(self) -> str:  # never a password in a traceback or a log
        return f"BMC(name={self.name!r})"


class UserData(msgspec.Struct, rename="pascal", forbid_unknown_fields=True, kw_only=True):
    directory: str


class Pool(msgspec.Struct, rename="pascal", forbid_unknown_fields=True, kw_only=True):
    bmcs: list[BMC] = msgspec.field(name="BMCs")
    server_templates: dict[str, Match] = {}
    user_data: UserData | None = None

    def bmc(self, name: str) -> BMC:
        for bmc in self.bmcs:
            if bmc.name == name:
                return bmc
        raise PluginError(f"BMC {name!r} is no longer in the pool (it was removed from "
                          "the pool file); put it back to manage its systems")


def default_pool_file(directory: Path) -> Path:
    return directory / "pool.yml"


def _check_private(path: Path) -> None:
    """Refuse a pool file that anyone but its owner may read or write, or that is not
    this user's: it holds the BMCs' passwords."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise PluginError(f"pool file {str(path)!r} is not a regular file")
    if st.st_uid != os.getuid():
        raise PluginError(f"pool file {str(path)!r} belongs to another user (uid "
                          f"{st.st_uid}); it must be this user's own")
    if st.st_mode & 0o077:
        raise PluginError(f"pool file {str(path)!r} may be read or written by others (mode "
                          f"{stat.S_IMODE(st.st_mode):03o}); it holds passwords: "
                          f"chmod 600 {path}")


def _decode(path: Path, data: bytes) -> Pool:
    try:
        raw = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise PluginError(f"pool file {str(path)!r} is not YAML or JSON: {exc}") from None
    try:
        pool: Pool = decode_strict(raw, Pool, "")
    except PluginError as exc:
        raise PluginError(f"pool file {str(path)!r}: {exc}") from None
    _check_pool(path, pool)
    return pool


def _check_pool(path: Path, pool: Pool) -> None:
    if not pool.bmcs:
        raise PluginError(f"pool file {str(path)!r}: BMCs: the list is empty; name at least "
                          "one Redfish service")
    names = [b.name for b in pool.bmcs]
    for i, bmc in enumerate(pool.bmcs):
        where = f"pool file {str(path)!r}: BMCs[{i}]"
        if not bmc.name or any(c in bmc.name for c in ":/ \t\n"):
            raise PluginError(f"{where}.Name: {bmc.name!r} must be a non-empty word without "
                              "':', '/' or spaces (it is part of instance IDs)")
        if names.count(bmc.name) > 1:
            raise PluginError(f"{where}.Name: {bmc.name!r} names two BMCs")
        if not bmc.url.startswith(("http://", "https://")):
            raise PluginError(f"{where}.URL: must be an http:// or https:// URL")


def load_pool(directory: Path) -> tuple[Pool, str]:
    """The pool, and where it came from (for the log): ``$INFRAKIT_REDFISH_POOL``, else
    ``pool.yml`` in the plugin's directory, else the one BMC of ``$INFRAKIT_REDFISH_URL``."""
    named = REDFISH["pool"].read()
    path = Path(named) if named else default_pool_file(directory)
    try:
        _check_private(path)
        data = path.read_bytes()
    except FileNotFoundError:
        if named:
            raise PluginError(f"pool file {named!r} (${REDFISH['pool'].env}) does not "
                              "exist") from None
        return _from_environment(path), "the environment"
    except OSError as exc:
        raise PluginError(f"pool file {str(path)!r} cannot be read: {exc.strerror}") \
            from None
    return _decode(path, data), str(path)


def _from_environment(path: Path) -> Pool:
    url = REDFISH["url"].read()
    if not url:
        raise PluginError(
            f"no pool: write the pool file {str(path)!r} (mode 600; or name another with "
            f"${REDFISH['pool'].env}), or give one BMC with ${REDFISH['url'].env}, "
            f"${REDFISH['username'].env} and ${REDFISH['password'].env}")
    pool = Pool(bmcs=[BMC(name="bmc", url=url, username=REDFISH["username"].read(),
                          password=REDFISH["password"].read())])
    _check_pool(Path(f"${REDFISH['url'].env}"), pool)
    return pool


def bmc_names(pool: Pool) -> list[str]:
    return [b.name for b in pool.bmcs]


def describe_match(match: Match) -> str:
    """``MinCPUs ≥ 16, Model ~ PowerEdge*``: what a spec asks for, in words."""
    parts = []
    if match.min_cpus:
        parts.append(f"MinCPUs ≥ {match.min_cpus}")
    if match.min_memory_gib:
        parts.append(f"MinMemoryGiB ≥ {match.min_memory_gib:g}")
    if match.model:
        parts.append(f"Model ~ {match.model}")
    if match.sku:
        parts.append(f"SKU ~ {match.sku}")
    return ", ".join(parts) or "any system"


def combine(template: Match | None, own: Match) -> Match:
    """A template's rules, with the spec's own rules over them where it gives any."""
    if template is None:
        return own
    given: dict[str, Any] = msgspec.structs.asdict(own)
    base: dict[str, Any] = msgspec.structs.asdict(template)
    return Match(**{k: given[k] or base[k] for k in base})
