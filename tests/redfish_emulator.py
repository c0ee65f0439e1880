"""The sushy-tools Redfish emulator, launched with what the tests of ``instance-redfish``
need of a BMC that its fake driver lacks. Run as a program: ``redfish_emulator.py CONFIG``,
where CONFIG is sushy-tools' own Python config file, plus these keys:

``SIZED_POWER_DELAY``
    ``(low, high)``: seconds a power change takes, at random between the two (the fake
    driver's own is 1 to 11 s; the tests shorten it, the benchmark keeps it).
``SIZED_EXPAND``
    Serve ``$expand=.($levels=1)`` on the Systems collection and say so in the service
    root's ``ProtocolFeaturesSupported``, as many vendors' BMCs do.

Each system of ``SUSHY_EMULATOR_FAKE_SYSTEMS`` may carry ``cpus``, ``memory_gib``,
``model`` and ``sku``: the fake driver keeps none of them, so :class:`SizedFakeDriver`
serves them. Every HTTP request is counted by method and kind of resource, and the counts
are served at ``GET /emulator/counts`` (``DELETE`` there zeroes them), for the benchmark.
"""

from __future__ import annotations

import json
import random
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from sushy_tools.emulator import main
from sushy_tools.emulator.resources.systems import fakedriver

COUNTS = "/emulator/counts"
_EXPAND = re.compile(r"\$expand=")


class SizedFakeDriver(fakedriver.FakeDriver):  # type: ignore[misc]
    """The fake driver, with sizes, model and SKU per system, and a power delay that a
    test can shorten."""

    def _field(self, identity: str, key: str) -> Any:
        return self._get(self.uuid(identity)).get(key)

    def get_total_cpus(self, identity: str) -> Any:
        return self._field(identity, "cpus")

    def get_total_memory(self, identity: str) -> Any:
        return self._field(identity, "memory_gib")

    def set_power_state(self, identity: str, state: str) -> None:
        super().set_power_state(identity, state)
        low, high = self._config.get("SIZED_POWER_DELAY", (1, 11))
        system = self._get(identity)
        if system.get("pending_power"):
            pending = dict(system["pending_power"], apply_time=time.time()
                           + random.uniform(low, high))
            self._update(system, pending_power=pending)


fakedriver.FakeDriver = SizedFakeDriver


def _kind(path: str) -> str:
    """``/redfish/v1/Systems/abc/VirtualMedia/Cd`` -> ``Systems/*/VirtualMedia/*``."""
    parts = path.removeprefix("/redfish/v1").strip("/").split("/")
    return "/".join(p if i % 2 == 0 else "*" for i, p in enumerate(parts)) or "ServiceRoot"


class Middleware:
    """Counts requests; adds model, SKU and ``$expand`` to what the emulator answers."""

    def __init__(self, app: Any, config: dict[str, Any]) -> None:
        self.app = app
        self.expand = bool(config.get("SIZED_EXPAND"))
        self.extra = {s["uuid"]: s for s in config["SUSHY_EMULATOR_FAKE_SYSTEMS"]}
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def _inner(self, environ: dict[str, Any], path: str) -> tuple[str, list[Any], bytes]:
        captured: list[Any] = []

        def start(status: str, headers: list[Any], *_: Any) -> Callable[[bytes], None]:
            captured[:] = [status, headers]
            return lambda _: None

        env = dict(environ, PATH_INFO=path, QUERY_STRING="", REQUEST_METHOD="GET")
        # the outer request passed the password check already (its answer was 200)
        body = b"".join(getattr(self.app, "app", self.app)(env, start))
        return captured[0], captured[1], body

    def _rewrite(self, path: str, query: str, body: bytes, environ: dict[str, Any]) -> bytes:
        doc = json.loads(body)
        if path.rstrip("/") == "/redfish/v1" and self.expand:
            doc["ProtocolFeaturesSupported"] = {"ExpandQuery": {"Levels": True,
                                                                "MaxLevels": 1,
                                                                "NoLinks": True}}
        if re.fullmatch(r"/redfish/v1/Systems/[^/]+/?", path):
            extra = self.extra.get(doc.get("UUID"), {})
            doc.update({k: extra[k.lower()] for k in ("Model", "SKU") if k.lower() in extra})
        if path.rstrip("/") == "/redfish/v1/Systems" and self.expand and _EXPAND.search(query):
            members = []
            for link in doc.get("Members", []):
                status, _, inner = self._inner(environ, link["@odata.id"])
                if status.startswith("200"):
                    members.append(json.loads(self._rewrite(link["@odata.id"], "", inner,
                                                            environ)))
            doc["Members"] = members
        return json.dumps(doc).encode()

    def __call__(self, environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        path, query = environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == COUNTS:
            with self.lock:
                if method == "DELETE":
                    self.counts.clear()
                data = json.dumps(dict(self.counts)).encode()
            start("200 OK", [("Content-Type", "application/json")])
            return [data]
        with self.lock:
            self.counts[f"{method} {_kind(path)}{'?$expand' if query else ''}"] += 1
        captured: list[Any] = []

        def keep(status: str, headers: list[Any], *_: Any) -> Callable[[bytes], None]:
            captured[:] = [status, headers]
            return lambda _: None

        body = b"".join(self.app(environ, keep))
        status, headers = captured
        if method == "GET" and status.startswith("200") and path.startswith("/redfish/v1"):
            body = self._rewrite(path, query, body, environ)
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(body))))
        start(status, headers)
        return [body]


def run(config_file: str) -> None:
    app = main.app
    app.configure(config_file=config_file)
    app.wsgi_app = Middleware(app.wsgi_app, dict(app.config))
    app.run(host="127.0.0.1", port=app.config["SUSHY_EMULATOR_LISTEN_PORT"], threaded=True)


if __name__ == "__main__":
    run(sys.argv[1])
