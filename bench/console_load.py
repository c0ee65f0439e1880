"""What the web console costs the manager, and what its first page weighs.

A manager (sqlite store, poll 1 s) with a TLS listener serves the console; it manages one
group of ``--size`` members of the file instance plugin. Then ``--consoles`` browsers are
simulated, each as the page behaves: an event stream (``/ui/live``) that is read, the
page's live part fetched again on every ``changed`` and every 5 seconds. The manager's CPU
is measured over ``--window`` seconds with no console open, then with the consoles open on
the group's page, then on the overview. The page weight is the bytes (heads and bodies) of
a first load of the overview with every asset it loads, as served (no compression).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

from bench.group_converge import spec
from bench.stack import PARENT_HELP, cpu_seconds, plugin_stack
from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import GroupClient

TOKEN = "bench-viewer-token-0123456789"
REFRESH = 5.0
"""Seconds between two fetches of a page's live part, as the page does."""
ASSETS = ("/ui/static/console.css", "/ui/static/htmx.min.js", "/ui/static/sse.min.js",
          "/ui/static/console.js", "/ui/static/favicon.svg")


def _tls(directory: Path) -> dict[str, str]:
    cert, key, tokens = directory / "cert.pem", directory / "key.pem", directory / "tokens"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    tokens.write_text(json.dumps({"tokens": [{"name": "bench", "role": "viewer",
                                              "token": TOKEN}]}))
    tokens.chmod(0o600)
    return {"INFRAKIT_TLS_CERT": str(cert), "INFRAKIT_TLS_KEY": str(key),
            "INFRAKIT_MANAGER_TOKEN_FILE": str(tokens)}


class Browser:
    """One simulated console: its session, its event stream, its refreshes."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.port, self.context = port, context
        self.cookie = ""
        self.fetches: list[float] = []
        self.part_bytes = 0
        self.stop = threading.Event()

    def conn(self, timeout: float | None = 60) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context,
                                           timeout=timeout)

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, int]:
        """Status and bytes (head and body) of one request, on a new connection."""
        conn = self.conn()
        headers = {"Cookie": self.cookie} if self.cookie else {}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.getheader("Set-Cookie"):
                self.cookie = resp.getheader("Set-Cookie", "").split(";")[0]
            head = sum(len(k) + len(v) + 4 for k, v in resp.getheaders()) + 17
            return resp.status, head + len(data)
        finally:
            conn.close()

    def log_in(self) -> None:
        status, _ = self.request("POST", "/ui/login", urlencode({"token": TOKEN}))
        assert status == 303, status

    def watch(self, live: str, part: str) -> None:
        """Follow the stream in one thread and refresh the part in this one, until stop."""
        changed = threading.Event()
        threading.Thread(target=self._stream, args=(live, changed), daemon=True).start()
        while not self.stop.is_set():
            changed.wait(REFRESH)
            changed.clear()
            if self.stop.is_set():
                break
            start = time.perf_counter()
            status, self.part_bytes = self.request("GET", part)
            assert status == 200, f"{part}: HTTP {status}"
            self.fetches.append(time.perf_counter() - start)

    def _stream(self, live: str, changed: threading.Event) -> None:
        conn = self.conn(timeout=None)  # as a browser's: a quiet stream stays open
        conn.request("GET", live, headers={"Cookie": self.cookie})
        resp = conn.getresponse()
        while not self.stop.is_set():
            line = resp.fp.readline()
            if not line:
                return
            if line.startswith(b"event: changed"):
                changed.set()


def _cpu_while(pid: int, window: float, browsers: list[Browser], live: str,
               part: str) -> tuple[float, list[float]]:
    threads = [threading.Thread(target=b.watch, args=(live, part), daemon=True)
               for b in browsers]
    for t in threads:
        t.start()
    time.sleep(1.0)  # let every stream open and the first fetches go
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(window)
    used = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    for b in browsers:
        b.stop.set()
    fetches = [f for b in browsers for f in b.fetches]
    return used, fetches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--consoles", type=int, default=10)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--parent", default=str(Path.home()), help=PARENT_HELP)
    args = parser.parse_args()
    port = 18000 + int(time.time()) % 1000
    with tempfile.TemporaryDirectory() as tmp:
        env = {**_tls(Path(tmp)), "INFRAKIT_MANAGER_LISTEN": str(port)}
        context = ssl.create_default_context(cafile=env["INFRAKIT_TLS_CERT"])
        with plugin_stack("instance-file", "flavor-vanilla", "manager", poll=1.0,
                          parent=args.parent, extra_env=env) as stack, \
                RPCClient(stack.socket("group"), timeout=300) as conn:
            group = GroupClient(conn)
            group.commit_group(spec("big", args.size, 500), False)
            while not group.describe_group("big").converged:
                time.sleep(1)
            try:
                _measure(stack.pid("group"), port, context, args)
            finally:
                group.destroy_group("big")


def _measure(pid: int, port: int, context: ssl.SSLContext, args: argparse.Namespace) -> None:
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    probe = Browser(port, context)
    probe.log_in()
    weight = [probe.request("GET", path)[1] for path in ("/ui/", *ASSETS)]
    print(f"page weight, first load of the overview: {sum(weight):,} bytes "
          f"(HTML {weight[0]:,}; assets {sum(weight[1:]):,}, of which htmx {weight[2]:,})")
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(args.window)
    idle = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    print(f"manager CPU, group of {args.size}, no console: {idle * 100:.1f}% of a core")
    for where, live, part in (("the group's page", "/ui/live?group=big", "/ui/part/group/big"),
                              ("the overview", "/ui/live", "/ui/part/groups")):
        browsers = [Browser(port, context) for _ in range(args.consoles)]
        for b in browsers:
            b.log_in()
        used, fetches = _cpu_while(pid, args.window, browsers, live, part)
        print(f"manager CPU with {args.consoles} consoles on {where}: {used * 100:.1f}% of a "
              f"core ({(used - idle) * 100:+.1f} points); {len(fetches)} part fetches, "
              f"median {statistics.median(fetches) * 1e3:.0f} ms, "
              f"max {max(fetches) * 1e3:.0f} ms, {browsers[0].part_bytes:,} bytes each")


if __name__ == "__main__":
    main()
