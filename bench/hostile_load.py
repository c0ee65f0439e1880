"""Hostile clients against a plugin and a manager, with a well-behaved client measured
meanwhile.

Started in a throw-away INFRAKIT_HOME: ``instance-file`` (on its UNIX socket) and
``infrakit manager --listen`` (TLS with a self-signed certificate, and a token). For
``--duration`` seconds, all at once, from loopback clients that are bounded in number and
in rate:

- 8 header floods per target: ``POST / HTTP/1.1``, then ``Authorization: Bearer AAAA...``
  that never ends, at most ``--flood-rate`` bytes a second each (over TLS to the manager,
  on the UNIX socket to the plugin); a flood whose connection is closed opens another
  after 0.1 s;
- 256 connections without the token to the manager's listener, each kept open (opened
  again a second after it is closed), half of them silent after TLS and half asking
  ``GET /`` every 20 s;
- one unread pipeline per target: ``GET /info/api.json`` again and again (with the token,
  to the manager), at most 64 MB, and no answer is ever read;
- the well-behaved client: one call at a time, 20 a second, each on a new connection as a
  CLI call or a follower's forwarded call makes it: ``Instance.DescribeInstances`` to the
  plugin, ``Group.InspectGroups`` with the token to the manager.

It prints the peak RSS (``VmHWM``) of each process, before the load and at the end, the
CPU each used meanwhile, the well-behaved client's latencies and failures, and what the
hostile clients did. The clients run in processes of their
own (``--role``) and use only the standard library, so that the servers may be any tree:
run with ``PYTHONPATH=/path/to/other/src`` to measure another tree's plugin and manager.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.stack import cpu_seconds

TOKEN = "hostile-load-bench-token-0123456789"
DESCRIBE = b'{"jsonrpc":"2.0","method":"Instance.DescribeInstances","params":{},"id":1}'
INSPECT = b'{"jsonrpc":"2.0","method":"Group.InspectGroups","params":{},"id":1}'
PIPELINE_CAP = 64 * 1024 * 1024


# -- connecting -----------------------------------------------------------------------------


def connector(target: str, cert: str) -> Callable[[], socket.socket]:
    """``unix:PATH`` or ``tls:PORT``: a function that opens a connection there."""
    kind, _, where = target.partition(":")
    if kind == "unix":
        def unix() -> socket.socket:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(where)
            return s
        return unix
    context = ssl.create_default_context(cafile=cert)

    def tls() -> socket.socket:
        raw = socket.create_connection(("127.0.0.1", int(where)), timeout=5)
        try:
            return context.wrap_socket(raw, server_hostname="127.0.0.1")
        except BaseException:
            raw.close()
            raise
    return tls


def request(body: bytes, token: str | None, path: str = "/") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n".encode() if token else b""
    if not body:
        return b"GET %s HTTP/1.1\r\nHost: h\r\n%s\r\n" % (path.encode(), auth)
    return (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n%s"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (auth, len(body), body))


# -- the hostile clients ----------------------------------------------------------------------

_tally: dict[str, int] = {}
_tally_lock = threading.Lock()


def tally(what: str, n: int = 1) -> None:
    """Count what the hostile clients did, for the report."""
    with _tally_lock:
        _tally[what] = _tally.get(what, 0) + n



def flood(connect: Callable[[], socket.socket], rate: int, stop: threading.Event) -> None:
    """A header that never ends, at ``rate`` bytes a second; another when one is cut."""
    chunk = b"A" * 16384
    while not stop.is_set():
        try:
            with connect() as s:
                tally("flood connections")
                s.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer ")
                while not stop.is_set():
                    s.sendall(chunk)
                    tally("flood MB", len(chunk))
                    time.sleep(len(chunk) / rate)
        except (OSError, ssl.SSLError):
            stop.wait(0.1)


def pipeline(connect: Callable[[], socket.socket], token: str | None,
             stop: threading.Event) -> None:
    """GET /info/api.json again and again, never reading an answer."""
    burst = request(b"", token, "/info/api.json") * 64
    sent = 0
    with contextlib.suppress(OSError, ssl.SSLError), connect() as s:
        s.settimeout(0.5)
        while not stop.is_set() and sent < PIPELINE_CAP:
            try:
                s.sendall(burst)
                sent += len(burst)
                tally("pipeline MB", len(burst))
            except TimeoutError:  # the server reads no more: good, wait
                pass
        stop.wait()


def crowd(connect: Callable[[], socket.socket], count: int, stop: threading.Event) -> None:
    """``count`` connections without the token, kept open: even ones silent, odd ones
    asking ``GET /`` every 20 s; each opened again a second after the server closes it."""
    conns: list[socket.socket | None] = [None] * count
    asked = [0.0] * count
    closed = [0.0] * count
    with selectors.DefaultSelector() as sel:
        while not stop.is_set():
            for key, _ in sel.select(0):  # what the server said, or that it closed
                if not _still_open(key.fileobj):  # type: ignore[arg-type]
                    tally("crowd connections closed by the server")
                    sel.unregister(key.fileobj)
                    key.fileobj.close()  # type: ignore[union-attr]
                    conns[key.data] = None
                    closed[key.data] = time.monotonic()
            for i in range(count):
                conn = conns[i]
                if conn is None:
                    if time.monotonic() - closed[i] < 1.0:
                        continue
                    with contextlib.suppress(OSError, ssl.SSLError):
                        conns[i] = conn = connect()
                        tally("crowd connections made")
                        conn.setblocking(False)
                        sel.register(conn, selectors.EVENT_READ, i)
                        asked[i] = time.monotonic()
                elif i % 2 and time.monotonic() - asked[i] > 20:
                    with contextlib.suppress(OSError, ssl.SSLError):
                        conn.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
                    asked[i] = time.monotonic()
            stop.wait(0.2)
        for conn in conns:
            if conn is not None:
                conn.close()


def _still_open(conn: socket.socket) -> bool:
    """Read what is there; False when the server has closed the connection."""
    try:
        return conn.recv(65536) != b""
    except (BlockingIOError, ssl.SSLWantReadError):
        return True
    except (OSError, ssl.SSLError):
        return False


def attack(args: argparse.Namespace) -> None:
    connect = connector(args.target, args.cert)
    stop = threading.Event()
    threads = [threading.Thread(target=flood, args=(connect, args.flood_rate, stop))
               for _ in range(args.floods)]
    threads.append(threading.Thread(target=pipeline, args=(connect, args.token or None, stop)))
    per_thread = 64
    for start in range(0, args.crowd, per_thread):
        threads.append(threading.Thread(target=crowd, args=(
            connect, min(per_thread, args.crowd - start), stop)))
    for t in threads:
        t.daemon = True
        t.start()
    time.sleep(args.duration)
    stop.set()
    for t in threads:
        t.join(10)
    print(json.dumps({k: v // 1048576 if k.endswith("MB") else v for k, v in _tally.items()}))


# -- the well-behaved client ----------------------------------------------------------------


def probe(args: argparse.Namespace) -> None:
    """One call at a time, ``--rate`` a second, each on a new connection; prints the
    latencies of those answered 200 and the failures, as JSON."""
    connect = connector(args.target, args.cert)
    body = request(INSPECT if args.target.startswith("tls:") else DESCRIBE, args.token or None)
    latencies: list[float] = []
    failures: dict[str, int] = {}
    deadline = time.monotonic() + args.duration
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            with connect() as s:
                s.settimeout(10)
                s.sendall(body)
                reply = _read_all(s)
            status = reply[:12].decode(errors="replace")
            if status == "HTTP/1.1 200":
                latencies.append(time.monotonic() - started)
            else:
                failures[status or "closed"] = failures.get(status or "closed", 0) + 1
        except (OSError, ssl.SSLError) as exc:
            failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
        time.sleep(max(0.0, 1 / args.rate - (time.monotonic() - started)))
    print(json.dumps({"latencies": latencies, "failures": failures}))


def _read_all(s: socket.socket) -> bytes:
    chunks = []
    while data := s.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


# -- the run ------------------------------------------------------------------------------------


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def self_signed(home: Path) -> tuple[Path, Path, Path]:
    cert, key, token = home / "cert.pem", home / "key.pem", home / "token"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    return cert, key, token


def answers(call: Callable[[], socket.socket], body: bytes) -> bool:
    try:
        with call() as s:
            s.sendall(body)
            return _read_all(s).startswith(b"HTTP/1.1 200")
    except (OSError, ssl.SSLError):
        return False


@contextlib.contextmanager
def servers(home: Path, port: int) -> Iterator[dict[str, int]]:
    """instance-file and a manager listening on ``port``; their pids."""
    cert, key, token = self_signed(home)
    env = {**os.environ, "INFRAKIT_HOME": str(home)}
    env.pop("INFRAKIT_PLUGINS_DIR", None)
    py = [sys.executable, "-m", "infrakit"]
    with open(home / "servers.log", "wb") as log:
        procs = {
            "instance-file": subprocess.Popen([*py, "plugin", "run", "instance-file"], env=env,
                                              stdout=log, stderr=log),
            "manager": subprocess.Popen([*py, "manager", "--listen", f"127.0.0.1:{port}",
                                         "--tls-cert", str(cert), "--tls-key", str(key),
                                         "--token-file", str(token)], env=env, stdout=log,
                                        stderr=log)}
    try:
        unix = connector(f"unix:{home / 'plugins' / 'instance-file'}", "")
        tls = connector(f"tls:{port}", str(cert))
        deadline = time.monotonic() + 30
        while not (answers(unix, request(DESCRIBE, None))
                   and answers(tls, request(INSPECT, TOKEN))):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs.values()):
                raise SystemExit(f"the servers did not start: see {home / 'servers.log'}")
            time.sleep(0.2)
        yield {name: p.pid for name, p in procs.items()}
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(15)


def run(args: argparse.Namespace) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="ikh", dir="/tmp"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        with servers(home, port) as pids:
            before = {name: vm_hwm_mb(pid) for name, pid in pids.items()}
            cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
            me = [sys.executable, "-m", "bench.hostile_load", "--duration", str(args.duration),
                  "--cert", str(home / "cert.pem")]
            unix, tls = f"unix:{home / 'plugins' / 'instance-file'}", f"tls:{port}"
            clients = [
                [*me, "--role", "attack", "--target", unix, "--flood-rate",
                 str(args.flood_rate)],
                [*me, "--role", "attack", "--target", tls, "--token", TOKEN, "--crowd", "256",
                 "--flood-rate", str(args.flood_rate)],
                [*me, "--role", "probe", "--target", unix],
                [*me, "--role", "probe", "--target", tls, "--token", TOKEN]]
            procs = [subprocess.Popen(c, stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent)
                     for c in clients]
            outs = [p.communicate(timeout=args.duration + 60)[0] for p in procs]
            after = {name: vm_hwm_mb(pid) for name, pid in pids.items()}
            cpu = {name: cpu_seconds(pid) - cpu[name] for name, pid in pids.items()}
        return {"before": before, "after": after, "cpu": cpu, "plugin": json.loads(outs[2]),
                "attacks": {"plugin": json.loads(outs[0]), "manager": json.loads(outs[1])},
                "manager": json.loads(outs[3]), "duration": args.duration}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def report(result: dict[str, Any]) -> None:
    for name, key in (("instance-file", "plugin"), ("manager", "manager")):
        lat = sorted(result[key]["latencies"])

        def ms(q: float, lat: list[float] = lat) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

        share = result["cpu"][name] / result["duration"] * 100
        print(f"{name:14s} peak RSS {result['before'][name]:6.1f} MB before the load, "
              f"{result['after'][name]:6.1f} MB after; CPU {share:.0f} % of a core; "
              f"well-behaved calls: {len(lat)} "
              f"answered, p50 {ms(0.5):.1f} ms, p99 {ms(0.99):.1f} ms, max {ms(1.0):.1f} ms; "
              f"failures: {result[key]['failures'] or 'none'}")
        print(f"{'':14s} the hostile clients: {result['attacks'][key]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--flood-rate", type=int, default=8 * 1024 * 1024,
                        help="bytes a second each header flood sends at most")
    parser.add_argument("--role", choices=["run", "attack", "probe"], default="run")
    parser.add_argument("--target", default="")
    parser.add_argument("--cert", default="")
    parser.add_argument("--token", default="")
    parser.add_argument("--floods", type=int, default=8)
    parser.add_argument("--crowd", type=int, default=0)
    parser.add_argument("--rate", type=float, default=20.0)
    args = parser.parse_args()
    if args.role == "attack":
        attack(args)
    elif args.role == "probe":
        probe(args)
    else:
        report(run(args))


if __name__ == "__main__":
    main()
