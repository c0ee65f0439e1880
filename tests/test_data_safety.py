"""State survives writers killed at any point: ``SIGKILL`` at random moments in the middle of
atomic file writes, of an instance plugin's bursts of provisions, and of store commits,
then the state is read back: the old version or the new one, never a torn or empty file,
and nothing that was answered is lost."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from infrakit.atomicfile import remove_stale_temps
from infrakit.store.sqlite import SQLiteStore
from tests.conftest import StartPlugin
from tests.helpers import result_of, rpc, wait_until

#: Seconds each kill loop may run; it stops earlier once it has done its iterations.
BUDGET = 8.0

SRC = Path(__file__).resolve().parent.parent / "src" / "infrakit"

# -- every writer of state goes through atomicfile or SQLite ---------------------------------

_RAW_WRITE = re.compile(
    r"""open\([^)]*["'](?:w|a|x|r\+|wb|ab|xb|w\+)["']|\.write_text\(|\.write_bytes\(|"""
    r"""os\.(?:write|pwrite)\(|O_WRONLY|O_RDWR""")

#: The raw writes in src/ that are not state, and why each may stay raw. A new raw write
#: of state must go through infrakit.atomicfile (or the SQLite store) instead.
NOT_STATE = {
    ("atomicfile.py", "os.write(fd, view)"): "the atomic writer itself",
    ("atomicfile.py", 'os.fdopen(fd, "wb")'): "the atomic writer itself",
    ("atomicfile.py", "os.O_WRONLY"): "the atomic writer itself",
    ("rpc/lifecycle.py", "os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC"):
        "the pid file, locked while the server lives; readers trust only a locked one",
    ("rpc/lifecycle.py", "os.pwrite(self._fd"): "the pid file (as above)",
    ("manager/lock_leader.py", "os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600"):
        "the leader lock file, never written: only flock()ed",
    ("cli/plugin.py", "os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW"):
        "a plugin's log",
    ("cli/main.py", "os.open(os.devnull, os.O_WRONLY)"):
        "stdout sent to /dev/null once its reader has gone",
    ("supervise.py", "os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC"):
        "a supervisor's pid file, locked while it lives; readers trust only a locked one",
    ("supervise.py", "os.pwrite(fd"): "a supervisor's pid file (as above)",
    ("plugins/instance/state.py", "os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW"):
        "the probe that the state directory is writable: a new, empty file, removed at once",
    ("plugins/instance/process.py", "script.write_text("):
        "an instance's init script, written before its process and its record exist",
    ("plugins/instance/process.py", "os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL"):
        "an instance's log, new and its own",
    ("plugins/instance/qemu.py", "files.init.write_text("):
        "a VM's Init for its firmware configuration, written in its new directory before "
        "QEMU and its record exist",
    ("plugins/instance/qemu_launch.py", "kernel.write_bytes(_probe_kernel())"):
        "the KVM probe's kernel, in a temporary directory of its own",
    ("plugins/flavor/probes.py", "os.devnull, os.O_RDWR"):
        "a probe command's stdin, stdout and stderr: /dev/null",
    ("plugins/instance/cgroups.py", "cgroup.subtree_control\").write_text("):
        "kernel cgroup control files",
    ("plugins/instance/cgroups.py", "_V2_FILES[controller]).write_text("):
        "kernel cgroup control files",
    ("plugins/instance/cgroups.py", "\"cpu.cfs_period_us\").write_text("):
        "kernel cgroup control files",
    ("plugins/instance/cgroups.py", "_V1_FILES[controller]).write_text("):
        "kernel cgroup control files",
}


def test_every_raw_file_write_in_src_is_known_not_to_be_state() -> None:
    """A source scan: each raw write (open for writing, write_text, os.write, ...) must be
    one listed in :data:`NOT_STATE`, so that state can only be written atomically."""
    unknown = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if _RAW_WRITE.search(line) and not any(
                    rel == where and snippet in line for where, snippet in NOT_STATE):
                unknown.append(f"{rel}:{number}: {line.strip()}")
    assert not unknown, "raw writes that may be state:\n" + "\n".join(unknown)
    for where, snippet in NOT_STATE:  # no stale entry hides a writer that moved
        assert snippet in (SRC / where).read_text(), (where, snippet)


# -- killed writers -------------------------------------------------------------------------


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A private directory for one test's files, removed after it."""
    path = Path(tempfile.mkdtemp(prefix="ik", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)

ONE_FILE = r"""
import hashlib, os, random, sys
from pathlib import Path
from infrakit.atomicfile import write_atomic
path = Path(sys.argv[1])
try:
    version = int(path.read_bytes().split(b" ", 1)[0]) + 1
except FileNotFoundError:
    version = 1
while True:
    payload = os.urandom(random.randrange(0, 256 * 1024))
    head = b"%d %d %s\n" % (version, len(payload), hashlib.sha256(payload).hexdigest().encode())
    write_atomic(path, head + payload)
    if version % 5 == 0:
        print(version, flush=True)
    version += 1
"""

MANY_FILES = r"""
import hashlib, os, random, sys
from pathlib import Path
from infrakit.atomicfile import write_atomic_many
directory = Path(sys.argv[1])
names = ["a.json", "b.json", "c.json", "d.json"]
try:
    version = max(int((directory / n).read_bytes().split(b" ", 1)[0]) for n in names) + 1
except FileNotFoundError:
    version = 1
while True:
    files = {}
    for name in names:
        payload = os.urandom(random.randrange(0, 64 * 1024))
        files[name] = b"%d %d %s\n" % (version, len(payload),
                                       hashlib.sha256(payload).hexdigest().encode()) + payload
    write_atomic_many(directory, files)
    if version % 5 == 0:
        print(version, flush=True)
    version += 1
"""


def _version_of(data: bytes) -> int:
    """The version a self-checking file holds; fails on a torn, empty or mixed file."""
    head, _, payload = data.partition(b"\n")
    version, size, digest = head.split(b" ")
    assert len(payload) == int(size), "torn: the payload is not the length its header says"
    assert hashlib.sha256(payload).hexdigest().encode() == digest, "mixed or torn payload"
    return int(version)


def _run_and_kill(script: str, arg: Path, iterations: int, check: Callable[[], None]) -> int:
    """Run ``script`` until it has written a few versions, SIGKILL it at a random moment
    and ``check`` the state, ``iterations`` times or until :data:`BUDGET` is spent;
    returns how many kills."""
    deadline = time.monotonic() + BUDGET
    kills = 0
    while kills < iterations and time.monotonic() < deadline:
        proc = subprocess.Popen([sys.executable, "-c", script, str(arg)],
                                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline(), "the writer died before writing"
            time.sleep(random.uniform(0, 0.05))  # a random point in the stream of writes
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
        kills += 1
        check()
    return kills


def test_write_atomic_killed_at_random_leaves_the_old_or_the_new_file(scratch: Path) -> None:
    path = scratch / "state.json"
    seen = [0]

    def check() -> None:
        version = _version_of(path.read_bytes())
        assert version >= seen[-1], "a version that was replaced came back"
        seen.append(version)

    kills = _run_and_kill(ONE_FILE, path, 25, check)
    assert kills >= 5 and seen[-1] > 5
    leftovers = [p.name for p in path.parent.iterdir() if p != path]
    assert all(re.fullmatch(r"\.state\.json\.\d+-.+\.tmp", n) for n in leftovers), leftovers
    # what the killed writers left is theirs alone: it goes, and a live writer's stays
    live = path.parent / f".state.json.{os.getpid()}-x.tmp"
    live.write_bytes(b"being written")
    assert remove_stale_temps(path.parent) == len(leftovers)
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, live.name])


def test_write_atomic_many_killed_at_random_leaves_each_file_whole(scratch: Path) -> None:
    """Each file is one whole version; the files were renamed one by one, so after a kill
    they may be of two consecutive versions, never further apart."""
    directory = scratch
    names = ["a.json", "b.json", "c.json", "d.json"]
    seen = [0]

    def check() -> None:
        versions = [_version_of((directory / n).read_bytes()) for n in names]
        assert max(versions) - min(versions) <= 1, versions
        assert min(versions) >= seen[-1], "a version that was replaced came back"
        seen.append(min(versions))

    kills = _run_and_kill(MANY_FILES, directory, 25, check)
    assert kills >= 5 and seen[-1] > 5


class Provisioner(threading.Thread):
    """Provisions as fast as the plugin answers, one spec or a batch at a time, and keeps
    what was answered: the ID and the tag each instance was made with."""

    def __init__(self, sock: Path, name: str) -> None:
        super().__init__(daemon=True)
        self.sock, self.name = sock, name
        self.answered: dict[str, str] = {}

    def run(self) -> None:
        n = 0
        while True:
            n += 1
            tags = [f"{self.name}-{n}-{k}" for k in range(1 + n % 3)]
            try:
                if len(tags) == 1:
                    resp = rpc(self.sock, "Instance.Provision",
                               {"Spec": {"Tags": {"mark": tags[0]}, "Properties": {"n": n}}},
                               timeout=5.0)
                    ids = [resp["result"]["ID"]]
                else:
                    resp = rpc(self.sock, "Instance.ProvisionEach",
                               {"Specs": [{"Tags": {"mark": t}} for t in tags]}, timeout=5.0)
                    ids = [r["ID"] for r in resp["result"]["Results"]]
            except Exception:  # the plugin was killed: what was answered is what counts
                return
            self.answered.update(zip(ids, tags, strict=True))


def test_instance_file_plugin_killed_mid_burst_keeps_every_answered_instance(
    start_plugin: StartPlugin, home: Path,
) -> None:
    """SIGKILL the plugin during a burst of provisions from several clients, restart it:
    every instance it answered is described with its tags, every state file decodes, and
    no ID is handed out twice."""
    state = home / "instance-file" / "instance-file"
    answered: dict[str, str] = {}
    deadline = time.monotonic() + BUDGET
    rounds = 0
    while rounds < 4 and time.monotonic() < deadline:
        plugin = start_plugin("instance-file")
        workers = [Provisioner(plugin.path, f"r{rounds}w{w}") for w in range(4)]
        for worker in workers:
            worker.start()
        time.sleep(random.uniform(0.1, 0.5))  # a random point in the burst
        os.kill(plugin.proc.pid, signal.SIGKILL)
        plugin.proc.wait()
        for worker in workers:
            worker.join(10)
            assert not worker.is_alive()
            assert not answered.keys() & worker.answered.keys(), "an ID was handed out twice"
            answered.update(worker.answered)
        rounds += 1

        for path in state.glob("instance-*.json"):
            record = json.loads(path.read_bytes())  # whole, never torn
            assert path.name == f"{record['ID']}.json"
    assert rounds >= 2 and len(answered) > 20

    plugin = start_plugin("instance-file")
    described = {d["ID"]: d["Tags"]["mark"] for d in result_of(
        plugin.path, "Instance.DescribeInstances", {})["Descriptions"]}
    missing = {i: t for i, t in answered.items() if described.get(i) != t}
    assert not missing, f"answered but lost after the kill: {sorted(missing)[:10]}"
    number = int(result_of(plugin.path, "Instance.Provision", {})["ID"].split("-")[1])
    assert number > max(int(i.split("-")[1]) for i in described), "an ID was reused"


STORE_WRITER = r"""
import sys, time
from pathlib import Path
from infrakit.plugins.group.storage import InFlight
from infrakit.atomicfile import remove_stale_temps
from infrakit.store.sqlite import SQLiteStore
store = SQLiteStore(Path(sys.argv[1]))
if not store.load_groups():
    store.save_group("g", b'{"ID":"g"}')
while True:
    first = store.reserve_sequences("g", 3)
    store.record(InFlight(key=f"k{first}", group="g", op="provision", started=time.time(),
                          deadline=time.time() + 60))
    print(first, flush=True)
"""


def _answered_or_ended(lines: list[bytes], proc: subprocess.Popen[bytes]) -> bool:
    return bool(lines) or proc.poll() is not None


def test_store_killed_mid_commit_keeps_every_answered_sequence_and_record(
    scratch: Path,
) -> None:
    """What tests/test_store.py does not kill: the sequence counter (a rolled-back counter
    would hand out a logical sequence twice) and the in-flight records. Everything the
    writer reported as done survives its SIGKILL; the counter never goes back."""
    path = scratch / "groups.db"
    reported: list[int] = []
    deadline = time.monotonic() + BUDGET
    kills = 0
    while kills < 5 and time.monotonic() < deadline:
        proc = subprocess.Popen([sys.executable, "-c", STORE_WRITER, str(path)],
                                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        lines: list[bytes] = []
        reader = threading.Thread(target=lines.extend, args=(proc.stdout,), daemon=True)
        reader.start()
        # killed while writing: some time after its first answer, however slowly it started
        wait_until(partial(_answered_or_ended, lines, proc), timeout=BUDGET,
                   what="the writer's first answer")
        time.sleep(random.uniform(0.02, 0.2))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(5)
        proc.stdout.close()
        reported += [int(line) for line in lines if line.strip()]
        kills += 1
        store = SQLiteStore(path)
        try:
            keys = {op.key for op in store.inflight("g")}
            assert {f"k{first}" for first in reported} <= keys, "a reported record was lost"
            assert store.reserve_sequences("g", 1) > max(reported) + 2, "the counter went back"
        finally:
            store.close()
    assert kills >= 3 and len(reported) > 10


@pytest.mark.parametrize("content", [b"", b"{", b'{"ID": "instance-7"',
                                     b'{"ID": "instance-8"}'])
def test_a_torn_record_is_set_aside_and_named_not_fatal(start_plugin: StartPlugin, home: Path,
                                                        content: bytes) -> None:
    """A record torn by something other than the plugin (a disk filled by another
    program, a copy cut short), or holding another instance's ID, does not stop the plugin
    starting; the others load. It is named in the log and moved aside, never deleted, and
    its ID is not handed out again."""
    state = home / "instance-file" / "instance-file"
    plugin = start_plugin("instance-file")
    kept = result_of(plugin.path, "Instance.Provision", {"Spec": {"Tags": {"k": "v"}}})["ID"]
    os.kill(plugin.proc.pid, signal.SIGKILL)
    plugin.proc.wait()
    (state / "instance-7.json").write_bytes(content)
    plugin = start_plugin("instance-file")
    ids = [d["ID"] for d in result_of(plugin.path, "Instance.DescribeInstances",
                                      {})["Descriptions"]]
    assert ids == [kept]
    [aside] = state.glob("instance-7.json.corrupt-*")
    assert aside.read_bytes() == content and not (state / "instance-7.json").exists()
    assert f"{state / 'instance-7.json'} is damaged" in plugin.output()
    assert aside.name in plugin.output()
    (state / ".next-id").unlink()  # lost: IDs go on after what the files name, still
    plugin.proc.terminate()
    plugin.proc.wait()
    plugin = start_plugin("instance-file")
    assert int(result_of(plugin.path, "Instance.Provision", {})["ID"].split("-")[1]) > 7
    assert "next-id" in plugin.output()


def test_a_damaged_state_file_stops_the_start_and_says_which_and_why(scratch: Path) -> None:
    """A plugin whose one state file describes every instance (labels, tags, launches not
    listed yet) does not start without it: it would lose them all. It says so."""
    import msgspec

    from infrakit.plugins.instance.state import StateFile
    from infrakit.spi.errors import PluginError

    class Kept(msgspec.Struct):
        tags: dict[str, str] = {}

    path = scratch / "state.json"
    path.write_bytes(b'{"tags": {"a": ')
    with pytest.raises(PluginError) as refused:
        StateFile(path, Kept)
    assert str(path) in str(refused.value) and "move it aside" in str(refused.value)
    assert path.read_bytes() == b'{"tags": {"a": '
