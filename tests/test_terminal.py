"""What plugins supply reaches a terminal as text, never as control sequences: the CLI's
tables and lines escape what a terminal would act on, and JSON and YAML stay exact.

A hostile plugin (a script) answers with IDs, tags and reasons that carry a title-setting
OSC, a clear-screen, carriage returns, new lines and bidirectional controls; the CLI runs
with its output on a pseudo-terminal, as a person would see it (click strips some escape
sequences when its output is not a terminal, which would hide the fault).
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import termios
import time
from pathlib import Path

import pytest
import yaml

from infrakit.cli.output import dump, printable, table
from tests.conftest import StartScript
from tests.helpers import PY

TITLE = "\x1b]0;pwned\x07"
CLEAR = "\x1b[2J\x1b[H"
HOSTILE_ID = f"web{TITLE}-1\nfake-row  -  x=y"
HOSTILE_TAG = f"v{CLEAR}\r\u202eevil"
SPEC = {"ID": "g", "Properties": {"Allocation": {"Size": 1}, "Instance": {"Plugin": "hostile"},
                                  "Flavor": {"Plugin": "hostile"}}}
#: How ``group commit --wait`` redraws its line on a terminal: the CLI's own.
REDRAW = "\r\x1b[K"
#: What a terminal acts on; none of it may reach the terminal from a plugin.
RAW = ("\x1b", "\x07", "\r", "\u202e", "\x9b")

HOSTILE = '''
import sys
from pathlib import Path
from infrakit.rpc.server import serve
from infrakit.spi import Description, GroupDescription, GroupSpec, PluginError
from infrakit.spi.group import GroupStatus, MemberStatus, OperationStatus

GID = sys.argv[2]
IID = sys.argv[3]
TAG = sys.argv[4]
BAD = IID + TAG


class Groups:
    def commit_group(self, spec, pretend):
        return "Noop\\nChanging " + BAD

    def inspect_groups(self):
        return [GroupSpec(id=GID, properties={"Note": BAD})]

    def describe_group(self, id):
        return GroupDescription(instances=[Description(id=IID, logical_id=TAG,
                                                       tags={"k" + TAG: TAG})],
                                converged=False)

    def describe_status(self, id):
        return GroupStatus(
            id=GID, target=1, converged=False,
            members=[MemberStatus(id=IID, logical_id=TAG, health="unhealthy" + TAG,
                                  age=1.0, current=True, reason="probe said " + BAD,
                                  last_exit="ended " + BAD, last_output=[BAD])],
            in_flight=[OperationStatus(op="provision" + TAG, instance=IID, age=1.0,
                                       expires_in=5.0)],
            outdated=1, update_paused=False, update_halted="halted " + BAD, unhealthy=1,
            max_unhealthy=0, breaker_open=True, errors=["failed " + BAD], failures=1,
            backoff="backoff " + BAD, health_unknown="unknown " + BAD)

    def destroy_instances(self, id, instances, shrink):
        return "Destroyed " + BAD

    def pause_update(self, id):
        return "Paused " + BAD

    def free_group(self, id):
        raise PluginError("cannot free " + BAD)

    def destroy_group(self, id):
        pass


class Instances:
    def provision(self, spec):
        return IID

    def destroy(self, instance):
        raise PluginError("refused " + BAD)

    def describe_instances(self, tags, properties):
        extra = {"properties": {"P": BAD}} if properties else {}
        return [Description(id=IID, logical_id=TAG, tags={"k": TAG}, **extra)]


serve("hostile", group=Groups(), instance=Instances(), directory=Path(sys.argv[1]))
'''


def on_terminal(args: list[str], home: Path, timeout: float = 60.0) -> tuple[int, str]:
    """Run ``python -m infrakit ARGS`` with stdout and stderr on a pseudo-terminal (output
    processing off, so the bytes are exactly what the CLI wrote); its exit status and
    everything it wrote."""
    master, slave = pty.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST  # no \n -> \r\n: a \r seen is one the CLI wrote
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    try:
        proc = subprocess.Popen([PY, "-m", "infrakit", *args], stdin=subprocess.DEVNULL,
                                stdout=slave, stderr=slave, cwd=home)
    finally:
        os.close(slave)
    out = bytearray()
    try:
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"infrakit {' '.join(args)} did not end in {timeout}s")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not chunk:
                break
            out += chunk
        return proc.wait(timeout), out.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def assert_inert(text: str) -> None:
    text = text.replace(REDRAW, "")
    found = [repr(c) for c in RAW if c in text]
    assert not found, f"{found} reached the terminal:\n{text!r}"


# -- the functions ---------------------------------------------------------------------------


def test_printable_escapes_what_a_terminal_acts_on_and_keeps_the_rest() -> None:
    assert printable("web-1 é ☃ a=b") == "web-1 é ☃ a=b"
    assert printable(TITLE) == "\\x1b]0;pwned\\x07"
    assert printable("a\nb\rc\td\x00e\x7ff\x9bg") == "a\\nb\\rc\\td\\x00e\\x7ff\\x9bg"
    assert printable("\u202eabc\u2028\u2066") == "\\u202eabc\\u2028\\u2066"
    assert printable("one\ntwo\x1b", keep="\n") == "one\ntwo\\x1b"


def test_table_cells_are_one_line_each_and_inert() -> None:
    out = table(["ID", "TAGS"], [[HOSTILE_ID, f"k={HOSTILE_TAG}"], ["web-2", "k=v"]])
    lines = out.split("\n")
    assert len(lines) == 3, lines
    assert lines[1].startswith("web\\x1b]0;pwned\\x07-1\\nfake-row")
    assert_inert(out)
    # columns still line up: escaped cells are measured as printed
    assert lines[1].index("k=") == lines[2].index("k=") == lines[0].index("TAGS")


def test_json_and_yaml_stay_exact_and_inert() -> None:
    data = {"ID": HOSTILE_ID, "Tags": {HOSTILE_TAG: "\x9b1m\x7f\u2066"}}
    for fmt, load in (("json", json.loads), ("yaml", yaml.safe_load)):
        text = dump(data, fmt)
        assert_inert(text)
        assert load(text) == data, fmt


# -- the CLI on a terminal -------------------------------------------------------------------


@pytest.fixture
def hostile(start_script: StartScript, home: Path) -> Path:
    script = HOSTILE.replace("sys.argv[2]", repr(f"g{TITLE}\nx")) \
        .replace("sys.argv[3]", repr(HOSTILE_ID)).replace("sys.argv[4]", repr(HOSTILE_TAG))
    return start_script(script, "hostile").path


#: Commands that print a message of the plugin's own lines (commit details: "Noop" on one
#: line, what changes on the next): its new lines stay, nothing else a terminal acts on.
LINES = {"commit", "set-size", "pause-update"}


@pytest.mark.parametrize("args", [
    ["group", "--name", "hostile", "ls"],
    ["group", "--name", "hostile", "ls", "-o", "wide"],
    ["group", "--name", "hostile", "describe", "g"],
    ["group", "--name", "hostile", "describe", "-q", "g"],
    ["group", "--name", "hostile", "describe", "-v", "g"],
    ["group", "--name", "hostile", "describe", "-o", "wide", "g"],
    ["group", "--name", "hostile", "describe", "-v", "-o", "wide", "g"],
    ["group", "--name", "hostile", "inspect", "-o", "table", "g"],
    ["group", "--name", "hostile", "inspect", "g"],
    ["group", "--name", "hostile", "inspect", "-o", "json", "g"],
    ["group", "--name", "hostile", "destroy-instances", "g", "x"],
    ["group", "--name", "hostile", "pause-update", "g"],
    ["group", "--name", "hostile", "free", "g"],
    ["group", "--name", "hostile", "set-size", "nope", "2"],
    ["group", "--name", "hostile", "commit", "--wait", "--wait-timeout", "1", "spec.json"],
    ["manager", "--name", "hostile", "inspect"],
    ["manager", "--name", "hostile", "commit", "config.json"],
    ["instance", "--name", "hostile", "describe"],
    ["instance", "--name", "hostile", "describe", "-q"],
    ["instance", "--name", "hostile", "describe", "--properties"],
    ["instance", "--name", "hostile", "describe", "-o", "wide"],
    ["instance", "--name", "hostile", "provision", "spec.json"],
    ["instance", "--name", "hostile", "destroy", "a", "b"],
    ["--log", "5", "instance", "--name", "hostile", "describe", "-q"],
    ["plugin", "ls"],
])
def test_nothing_a_plugin_says_reaches_the_terminal_raw(hostile: Path, home: Path,
                                                        args: list[str]) -> None:
    (home / "spec.json").write_text(json.dumps(SPEC))
    (home / "config.json").write_text(json.dumps({"Groups": {"g": SPEC}}))
    _, out = on_terminal(args, home)
    assert out.strip(), args
    assert_inert(out)
    if not LINES & set(args):
        # the hostile ID's new line never makes a row or a line of its own
        assert not any(line.startswith("fake-row") for line in out.split("\n")), out


def test_commit_details_keep_their_lines(hostile: Path, home: Path) -> None:
    (home / "spec.json").write_text(json.dumps(SPEC))
    status, out = on_terminal(["group", "--name", "hostile", "commit", "spec.json", "--pretend"],
                              home)
    assert status == 0, out
    assert out.startswith("Committing g would involve: Noop\nChanging web\\x1b]0;pwned")


def test_a_rows_new_line_shows_escaped_in_describe(hostile: Path, home: Path) -> None:
    status, out = on_terminal(["group", "--name", "hostile", "describe", "g"], home)
    assert status == 0, out
    lines = out.rstrip("\n").split("\n")
    assert lines[0].split() == ["ID", "LOGICAL", "HEALTH", "AGE", "CONFIG", "RESTARTS"]
    assert len(lines) == 3, lines  # the header, one member, the summary
    assert lines[1].startswith("web\\x1b]0;pwned\\x07-1\\nfake-row")


def test_json_and_yaml_on_a_terminal_still_say_exactly_what_the_plugin_said(
        hostile: Path, home: Path) -> None:
    for fmt, load in (("json", json.loads), ("yaml", yaml.safe_load)):
        status, out = on_terminal(["instance", "--name", "hostile", "describe", "-o", fmt],
                                  home)
        assert status == 0, out
        assert_inert(out)
        assert load(out) == [{"ID": HOSTILE_ID, "LogicalID": HOSTILE_TAG,
                              "Tags": {"k": HOSTILE_TAG}}], fmt
