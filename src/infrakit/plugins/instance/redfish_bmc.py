"""Talking to the BMCs of ``instance-redfish``, through the ``sushy`` Redfish client.

One client per BMC, logged in once (a Redfish session where the service offers one, else
HTTP basic authentication) and kept. The systems of a BMC are read in one request when the
service supports ``$expand`` (its root's ``ProtocolFeaturesSupported.ExpandQuery``), else
one request per system wanted. Every fault comes back as a :class:`PluginError` that names
the BMC (by its name in the pool, never its URL) and says what to do; sushy's own log,
which names URLs, is kept quiet.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import sushy
from sushy import exceptions as sushy_errors

from infrakit.plugins.instance.redfish_pool import BMC
from infrakit.spi.errors import PluginError

log = logging.getLogger(__name__)
logging.getLogger("sushy").setLevel(logging.CRITICAL + 1)  # its messages carry URLs

EXPANDS = (("NoLinks", "?$expand=.($levels=1)"), ("ExpandAll", "?$expand=*($levels=1)"))
"""The query that expands a collection's members, by the feature that allows it."""
POLL = (0.25, 2.0)
"""Seconds between two reads of a system's power state while waiting for a change: the
first wait, doubled after each read up to the second (servers take seconds to minutes)."""


class Facts(msgspec.Struct, kw_only=True):
    """What the plugin reads of a system."""

    id: str
    path: str
    name: str = ""
    uuid: str = ""
    power: str = "Unknown"
    health: str = "Unknown"
    cpus: int | None = None
    """None when the BMC does not tell (some do not, before the first boot)."""
    memory_gib: float | None = None
    model: str = ""
    sku: str = ""
    virtual_media: bool = False


def facts(doc: dict[str, Any]) -> Facts:
    """A ComputerSystem document, read."""
    status = doc.get("Status") or {}
    return Facts(id=str(doc.get("Id", "")), path=str(doc.get("@odata.id", "")),
                 name=str(doc.get("Name") or ""), uuid=str(doc.get("UUID") or ""),
                 power=str(doc.get("PowerState") or "Unknown"),
                 health=str(status.get("Health") or "Unknown"),
                 cpus=_number(int, (doc.get("ProcessorSummary") or {}).get("Count")),
                 memory_gib=_number(float, (doc.get("MemorySummary") or {})
                                    .get("TotalSystemMemoryGiB")),
                 model=str(doc.get("Model") or ""), sku=str(doc.get("SKU") or ""),
                 virtual_media="VirtualMedia" in doc)


def _number(kind: Callable[[Any], Any], value: Any) -> Any:
    try:
        return None if value is None else kind(value)
    except (TypeError, ValueError):
        return None


def reason(exc: Exception) -> str:
    """What went wrong in a call to a BMC, in words, without its URL."""
    if isinstance(exc, sushy_errors.AccessError):
        return (f"it refused the credentials (HTTP {exc.status_code}): check Username and "
                "Password for it in the pool")
    if isinstance(exc, sushy_errors.ResourceNotFoundError):
        return "it has no such resource (HTTP 404)"
    if isinstance(exc, sushy_errors.HTTPError):
        return f"it answered HTTP {exc.status_code}: {exc.detail or exc.code}"
    if isinstance(exc, sushy_errors.ConnectionError):
        text = str(exc)
        why = next((w for k, w in (("refused", "connection refused"),
                                   ("timed out", "timed out"), ("Timeout", "timed out"),
                                   ("resolve", "its host name does not resolve"),
                                   ("Name or service", "its host name does not resolve"),
                                   ("SSL", "TLS failed"), ("CERTIFICATE", "TLS failed"))
                    if k in text), "cannot connect")
        return f"it cannot be reached ({why}): check its URL in the pool and that it is up"
    return f"{type(exc).__name__}: {exc}"


class Connections:
    """A logged-in sushy client per BMC, made on first use and kept."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._clients: dict[str, sushy.Sushy] = {}
        self._lock = threading.Lock()

    @contextmanager
    def talking(self, bmc: BMC, doing: str) -> Iterator[sushy.Sushy]:
        """The client of ``bmc``; any fault inside becomes a :class:`PluginError` that
        names the BMC and ``doing``, and a refused login is forgotten, to log in again."""
        try:
            yield self._client(bmc)
        except PluginError:
            raise
        except (sushy_errors.SushyError, OSError) as exc:
            if isinstance(exc, (sushy_errors.AccessError, sushy_errors.ConnectionError)):
                with self._lock:
                    self._clients.pop(bmc.name, None)
            raise PluginError(f"BMC {bmc.name!r}: {doing}: {reason(exc)}") from None

    def _client(self, bmc: BMC) -> sushy.Sushy:
        with self._lock:
            client = self._clients.get(bmc.name)
        if client is not None:
            return client
        client = sushy.Sushy(bmc.url, username=bmc.username, password=bmc.password,
                             verify=bmc.verify, read_timeout=self.timeout,
                             connect_timeout=min(self.timeout, 10),
                             server_side_retries=1, server_side_retries_delay=1)
        with self._lock:
            return self._clients.setdefault(bmc.name, client)

    def systems(self, bmc: BMC, wanted: list[str] | None = None) -> dict[str, Facts]:
        """The systems of ``bmc`` by Redfish path: all of them, in one request where the
        service expands collections; else those of ``wanted`` (paths), one request each,
        or all of them, one request for the collection and one per system. A wanted
        system the BMC does not have is left out."""
        with self.talking(bmc, "listing its systems") as client:
            conn = client._conn  # sushy reads expanded collections only through it
            query = expand_query(client)
            if query:
                doc = conn.get(path=client._systems_path + query).json()
                found = [facts(m) for m in doc.get("Members", [])]
                return {f.path: f for f in found}
            if wanted is None:
                wanted = list(client.get_system_collection().members_identities)
            out = {}
            for path in wanted:
                try:
                    out[path] = facts(conn.get(path=path).json())
                except sushy_errors.ResourceNotFoundError:
                    continue
            return out

    def system(self, bmc: BMC, path: str, doing: str) -> Any:
        """sushy's object of one system, to act on it (within :meth:`talking`)."""
        with self.talking(bmc, doing) as client:
            return client.get_system(path)


def expand_query(client: sushy.Sushy) -> str:
    """How to ask this service for a collection with its members, or "" if it cannot."""
    features = client.protocol_features_supported
    expand = (features.expand_query if features is not None else None) or {}
    if not isinstance(expand, dict) or not expand.get("Levels"):
        return ""
    return next((q for feature, q in EXPANDS if expand.get(feature)), "")


def wait_power(system: Any, wanted: Callable[[str], bool], deadline: float) -> str | None:
    """Read the system's power state until ``wanted`` says yes or ``deadline`` (a
    ``time.monotonic()``) passes: power changes take a while, seconds to minutes. Returns
    the state reached, or None at the deadline. Each read refreshes ``system`` and every
    sub-resource read through it: give an object fresh from ``get_system`` to read one."""
    pause = POLL[0]
    while True:
        system.refresh()
        state = str(getattr(system.power_state, "value", system.power_state))
        if wanted(state):
            return state
        if time.monotonic() >= deadline:
            return None
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, POLL[1])


def cd_drive(system: Any) -> Any:
    """The system's virtual CD/DVD drive; None when it has none."""
    for media in system.virtual_media.get_members():
        kinds = {str(getattr(t, "value", t)) for t in media.media_types or []}
        if kinds & {"CD", "DVD"}:
            return media
    return None
