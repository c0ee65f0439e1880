"""What roles cost a call over a manager's TLS listener: keep-alive calls a second and their
latency, side by side, against a manager of the code before roles (one shared token) and
one with them (named tokens in a file, each call looked up, checked against the method's
role and run as its caller), in alternating rounds so that both meet the same load.

Also the lookup and the check alone, in process: ``Tokens.bearer`` over a file of N
tokens (it hashes what it is shown and compares it with every entry) and ``authorize``.

    python -m bench.role_check --before /path/to/older/src
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

from bench.stack import cpu_seconds, wait
from infrakit.rpc.tokens import Tokens, hashed
from infrakit.spi.access import Principal, Role, authorize
from infrakit.spi.group import GROUP
from tests.test_manager_tcp import free_port, self_signed

TOKEN = "bench-token-of-the-operator-0123456789"
BODY = json.dumps({"jsonrpc": "2.0", "method": "Group.InspectGroups", "params": {},
                   "id": 1}).encode()


def start(directory: Path, src: str, token_file: Path, tls: dict[str, Path]) -> tuple[
        subprocess.Popen[bytes], int]:
    """A manager of the code under ``src``, in a home of its own, with a TLS listener."""
    port = free_port()
    env = {**os.environ, "INFRAKIT_HOME": str(directory), "PYTHONPATH": src}
    proc = subprocess.Popen([sys.executable, "-m", "infrakit", "manager", "--listen",
                             str(port), "--tls-cert", str(tls["cert"]), "--tls-key",
                             str(tls["key"]), "--token-file", str(token_file)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait(lambda: (directory / "plugins" / "group").exists(), 30)
    return proc, port


def round_of(port: int, cert: Path, calls: int) -> tuple[float, list[float]]:
    """Calls a second over one keep-alive TLS connection, and each call's seconds."""
    conn = http.client.HTTPSConnection(
        "127.0.0.1", port, context=ssl.create_default_context(cafile=str(cert)), timeout=10)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    conn.request("POST", "/", BODY, headers)  # the handshake is not counted
    conn.getresponse().read()
    lat = []
    started = time.perf_counter()
    for _ in range(calls):
        t0 = time.perf_counter()
        conn.request("POST", "/", BODY, headers)
        resp = conn.getresponse()
        data = resp.read()
        lat.append(time.perf_counter() - t0)
        assert resp.status == 200 and b'"Groups"' in data, data
    elapsed = time.perf_counter() - started
    conn.close()
    return calls / elapsed, lat


def in_process(directory: Path, entries: int) -> tuple[float, float]:
    """Microseconds of one bearer lookup over ``entries`` tokens, and of one check."""
    tokens = Tokens.load(tokens_file(directory / f"{entries}.yaml", entries))
    header = f"Bearer {TOKEN}".encode()
    n = 20000
    lookup = timeit.timeit(lambda: tokens.bearer(header), number=n) / n * 1e6
    principal = Principal("alice", Role.OPERATOR)
    method = GROUP.methods["Group.DescribeGroup"]
    check = timeit.timeit(lambda: authorize(principal, method), number=n) / n * 1e6
    return lookup, check


def tokens_file(path: Path, entries: int) -> Path:
    """A file of ``entries`` hashed tokens, the last of them :data:`TOKEN`, an operator's."""
    path.write_text("tokens:\n" + "".join(
        f"- {{name: user{n}, role: viewer, token: {hashed(f'other-{n}-0123456789abc')}}}\n"
        for n in range(entries - 1))
        + f"- {{name: alice, role: operator, token: {hashed(TOKEN)}}}\n")
    path.chmod(0o600)
    return path


def pct(sorted_lat: list[float], q: float) -> float:
    return sorted_lat[min(len(sorted_lat) - 1, int(q * len(sorted_lat)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", required=True,
                        help="the src directory of the code before roles")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    top = Path(tempfile.mkdtemp(prefix="ikrole", dir="/tmp"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        tls = self_signed(top)
        single = top / "single.token"
        single.write_text(TOKEN + "\n")
        single.chmod(0o600)
        named = tokens_file(top / "tokens.yaml", 10)
        src_after = str(Path(__file__).resolve().parent.parent / "src")
        sides: dict[str, tuple[int, int]] = {}
        for n, (label, src, token_file) in enumerate((
                ("before, one shared token", args.before, single),
                ("after, one shared token (admin)", src_after, single),
                ("after, 10 named tokens (operator)", src_after, named))):
            (top / str(n)).mkdir()
            proc, port = start(top / str(n), src, token_file, tls)
            procs.append(proc)
            sides[label] = (port, proc.pid)
        rates: dict[str, list[float]] = {k: [] for k in sides}
        lats: dict[str, list[float]] = {k: [] for k in sides}
        load_before = os.getloadavg()[0]
        cpu = dict.fromkeys(sides, 0.0)
        for _ in range(args.rounds):
            for label, (port, pid) in sides.items():
                used = cpu_seconds(pid)
                rate, lat = round_of(port, tls["cert"], args.calls)
                cpu[label] += cpu_seconds(pid) - used
                rates[label].append(rate)
                lats[label] += lat
        print(f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after; "
              f"{args.rounds} rounds of {args.calls} calls each, alternating")
        for label in sides:
            lat = sorted(lats[label])
            print(f"{label}: {max(rates[label]):.0f} calls/s best round, "
                  f"{sorted(rates[label])[len(rates[label]) // 2]:.0f} median round; "
                  f"p50 {pct(lat, 0.5):.3f} ms, p99 {pct(lat, 0.99):.3f} ms; the "
                  f"manager's CPU {cpu[label] / len(lat) * 1e6:.0f} us a call")
        for entries in (1, 10, 100):
            lookup, check = in_process(top, entries)
            print(f"in process, {entries} tokens: lookup {lookup:.2f} us, "
                  f"role check {check:.3f} us")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
