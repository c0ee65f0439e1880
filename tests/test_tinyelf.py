"""The tiny executables of ``infrakit.images.tinyelf`` run on this kernel, ``readelf -h``
reads their headers without a warning, the byte tables of the module's docstring are the
bytes it writes, and ``pause`` ends at once, with status 0, on SIGTERM or SIGINT. The
image archive of ``infrakit.images.scratch`` is checked here without an engine; the
Docker engine loads and runs it in tests/test_docker_plugin.py."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pty
import re
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from infrakit.images import scratch, tinyelf
from tests.conftest import Cli
from tests.helpers import PY, i386_problem, require_engine, wait_until

MESSAGE = b"Hello Docker world!\n"
#: Messages at the edges: none, shorter than the bytes left of the program header, the
#: longest, and bytes that are not text.
MESSAGES = [MESSAGE, b"", b"x", bytes(range(1, 256)), b"\x00\xff\n"]
#: The system call that pause waits in, once SIGINT and SIGTERM are blocked.
RT_SIGTIMEDWAIT = "128"


def _executable(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    path.chmod(0o755)
    return path


def _run(path: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([path], capture_output=True, timeout=10)


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: f"{len(m)}-bytes")
@pytest.mark.parametrize(("bits", "build", "fixed", "least"),
                         [(32, tinyelf.hello32, 72, 76), (64, tinyelf.hello64, 102, 104)])
def test_hello_prints_its_message_and_exits_0(
        tmp_path: Path, message: bytes, bits: int, build: Callable[[bytes], bytes],
        fixed: int, least: int) -> None:
    if bits == 32 and (problem := i386_problem(tmp_path)):
        pytest.skip(problem)
    data = build(message)
    assert len(data) == max(least, fixed + len(message))
    done = _run(_executable(tmp_path, f"hello{bits}", data))
    assert (done.returncode, done.stdout, done.stderr) == (0, message, b"")


def test_a_message_a_byte_of_code_cannot_count_is_refused() -> None:
    for build in (tinyelf.hello32, tinyelf.hello64):
        with pytest.raises(tinyelf.MessageError, match=r"256 bytes.* at most 255"):
            build(bytes(256))


def test_overlapping_structures_must_agree_on_every_shared_byte() -> None:
    out = tinyelf._Layout()
    out.field(0, "I", 1)  # as p_type over e_phnum and e_shentsize
    out.field(0, "H", 1)
    out.field(2, "H", 0)
    with pytest.raises(AssertionError, match="byte 0x02 written as 0x00 and as 0x38"):
        out.field(2, "H", 56)
    with pytest.raises(AssertionError, match="cannot reach 0x90"):
        out.code(0x07, b"\x90", then=0x90)


@pytest.fixture(scope="module")
def readelf() -> str:
    found = shutil.which("readelf")
    require_engine(None if found else "readelf is not installed (Debian package binutils)")
    assert found is not None
    return found


_HEADERS = {
    "hello32": (tinyelf.hello32(MESSAGE), "ELF32", "Intel 80386", "0x8048007", 44),
    "hello64": (tinyelf.hello64(MESSAGE), "ELF64", "Advanced Micro Devices X86-64",
                "0x400007", 48),
    "pause": (tinyelf.pause64(), "ELF64", "Advanced Micro Devices X86-64", "0x400007", 48),
}


@pytest.mark.parametrize("name", sorted(_HEADERS))
def test_readelf_reads_the_header_without_a_warning(tmp_path: Path, readelf: str,
                                                    name: str) -> None:
    data, elf_class, machine, entry, phoff = _HEADERS[name]
    done = subprocess.run([readelf, "-h", _executable(tmp_path, name, data)],
                          capture_output=True, text=True, timeout=10)
    assert (done.returncode, done.stderr) == (0, ""), done
    fields = dict(re.findall(r"^\s+([^:]+):\s+(.*?)\s*$", done.stdout, re.MULTILINE))
    assert fields["Class"] == elf_class
    assert fields["Data"] == "2's complement, little endian"
    assert fields["Type"] == "EXEC (Executable file)"
    assert (fields["Machine"], fields["Entry point address"]) == (machine, entry)
    assert fields["Start of program headers"] == f"{phoff} (bytes into file)"
    assert fields["Number of program headers"] == "1"
    assert fields["Start of section headers"] == "0 (bytes into file)"
    assert fields["Number of section headers"] == "0"


# -- the docstring's tables are the bytes ----------------------------------------------------


def _tables() -> list[list[tuple[int, bytes]]]:
    """Each literal block of the module docstring as (offset, bytes) rows; a row's bytes
    are hex pairs and ``0*N`` (N zeros), up to the first word that is neither."""
    doc = tinyelf.__doc__ or ""
    tables = []
    for block in re.findall(r"::\n\n((?:    .*\n)+)", doc):
        rows = []
        for line in block.splitlines():
            offset, rest = line.split(maxsplit=1)
            data = bytearray()
            for word in rest.split("  ")[0].split(" "):
                if re.fullmatch(r"[0-9a-f]{2}", word):
                    data.append(int(word, 16))
                elif zeros := re.fullmatch(r"0\*(\d+)", word):
                    data += bytes(int(zeros[1]))
                else:
                    break
            rows.append((int(offset, 16), bytes(data)))
        tables.append(rows)
    return tables


def test_the_docstring_shows_every_byte_of_the_headers_and_the_code() -> None:
    hello32, hello64, pause = _tables()
    for rows, data in ((hello32, tinyelf.hello32(MESSAGE)), (hello64, tinyelf.hello64(MESSAGE))):
        # each row starts where the one before ended, from 0 to the end of the headers
        assert [offset for offset, _ in rows] == \
            [sum(len(row) for _, row in rows[:i]) for i in range(len(rows))]
        shown = b"".join(row for _, row in rows)
        assert len(rows) > 20 and rows[-1][1] == b""  # the last row: "the rest of ..."
        at = len(data) - len(MESSAGE)  # where the message starts
        assert data == shown + MESSAGE[len(shown) - at:]
    code = tinyelf.pause64()
    assert len(pause) == 14
    for offset, row in pause:
        assert code[offset:offset + len(row)] == row, hex(offset)


# -- pause -------------------------------------------------------------------------------------


def _state(pid: int) -> str:
    """The process's state letter (``S`` sleeping, ``T`` stopped), or ``-`` once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return "-"


def _waiting(proc: subprocess.Popen[bytes]) -> bool:
    """It sleeps in rt_sigtimedwait: it has blocked SIGINT and SIGTERM and waits for one."""
    try:
        call = Path(f"/proc/{proc.pid}/syscall").read_text().split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return call == RT_SIGTIMEDWAIT and _state(proc.pid) == "S"


@pytest.fixture
def pause(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A running ``pause``, once it waits for its signals (one sent before would find the
    default action in place, and kill it)."""
    proc = subprocess.Popen([_executable(tmp_path, "pause", tinyelf.pause64())])
    try:
        wait_until(lambda: _waiting(proc), 5.0, interval=0.005, what="pause to wait")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_pause_exits_0_within_100_ms_of_sigterm_or_sigint(
        pause: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    assert len(tinyelf.pause64()) == 116
    start = time.monotonic()
    pause.send_signal(sig)
    status = pause.wait(timeout=5)
    took = time.monotonic() - start
    assert status == 0
    assert took < 0.1, took


def test_pause_waits_again_after_it_is_stopped_and_continued(
        pause: subprocess.Popen[bytes]) -> None:
    pause.send_signal(signal.SIGSTOP)
    wait_until(lambda: _state(pause.pid) == "T", 5.0, interval=0.005, what="pause to stop")
    pause.send_signal(signal.SIGCONT)  # its wait answers -EINTR: it must wait again
    wait_until(lambda: pause.poll() is not None or _waiting(pause), 5.0, interval=0.005,
               what="pause to wait again, or to end")
    assert pause.poll() is None
    pause.send_signal(signal.SIGTERM)
    assert pause.wait(timeout=5) == 0


# -- the image archive, without an engine -------------------------------------------------------


def _members(archive: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: m for m in tar.getmembers()}


def _content(archive: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        found = tar.extractfile(name)
        assert found is not None
        return found.read()


def test_an_image_archive_is_a_manifest_a_config_and_one_layer_of_one_file() -> None:
    pause = tinyelf.pause64()
    archive = scratch.image_tar(pause, "pause", "infrakit/pause:1")
    assert archive == scratch.image_tar(pause, "pause", "infrakit/pause:1")  # reproducible
    [entry] = json.loads(_content(archive, "manifest.json"))
    assert entry["RepoTags"] == ["infrakit/pause:1"]
    config_bytes = _content(archive, entry["Config"])
    assert entry["Config"] == hashlib.sha256(config_bytes).hexdigest() + ".json"
    config = json.loads(config_bytes)
    [layer_name] = entry["Layers"]
    layer = _content(archive, layer_name)
    assert config["rootfs"] == {"type": "layers",
                                "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}"]}
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert config["config"] == {"Entrypoint": ["/pause"]}
    assert sorted(_members(archive)) == sorted([entry["Config"], layer_name, "manifest.json"])

    [only] = _members(layer).values()
    assert (only.name, only.mode, only.uid, only.gid, only.mtime) == ("pause", 0o755, 0, 0, 0)
    assert only.isreg() and _content(layer, "pause") == pause
    assert len(layer) == 512 + 512 + 1024  # its header, its one block, the end marker

    hello = scratch.image_tar(tinyelf.hello32(MESSAGE), "hello", "infrakit/hello:32", 32)
    [entry] = json.loads(_content(hello, "manifest.json"))
    assert json.loads(_content(hello, entry["Config"]))["architecture"] == "386"


@pytest.mark.parametrize(("tag", "reason"), [
    ("infrakit/pause", "write it as name:tag"), ("Pause:1", "in lower case"),
    ("pause:latest", "other than 'latest'"), ("pause:", "write it as name:tag")])
def test_a_tag_docker_would_refuse_or_pull_is_refused(tag: str, reason: str) -> None:
    with pytest.raises(scratch.TagError, match=reason):
        scratch.image_tar(tinyelf.pause64(), "pause", tag)


# -- the command -----------------------------------------------------------------------------


def test_the_command_writes_an_executable_or_an_image_archive(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "hello"
    done = cli("image", "build-tiny", "hello", "--message", "hi there", "-o", str(out))
    assert (done.returncode, done.stdout) == (0, ""), done
    assert done.stderr == f"{out}: hello, 111 bytes\n"
    assert out.stat().st_mode & 0o777 == 0o755
    assert _run(out).stdout == b"hi there\n"

    archive = subprocess.run(
        [PY, "-m", "infrakit", "image", "build-tiny", "pause", "--tag", "infrakit/pause:1",
         "-o", "-"],
        capture_output=True, timeout=60, check=True).stdout
    assert archive == scratch.image_tar(tinyelf.pause64(), "pause", "infrakit/pause:1")


@pytest.mark.parametrize(("args", "reason"), [
    (["pause", "--bits", "32"], "pause is built for x86-64 only"),
    (["hello", "--tag", "hello:latest"], "pin a tag other than 'latest'"),
    (["hello", "--message", "x" * 255], "255 bytes; hello prints at most 254 and a new line"),
])
def test_the_command_says_what_it_cannot_build(cli: Cli, tmp_path: Path, args: list[str],
                                               reason: str) -> None:
    done = cli("image", "build-tiny", *args, "-o", str(tmp_path / "out"))
    assert done.returncode == 2 and reason in done.stderr, done
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


def test_the_command_writes_no_binary_to_a_terminal(tmp_path: Path) -> None:
    main, terminal = pty.openpty()
    try:
        done = subprocess.run([PY, "-m", "infrakit", "image", "build-tiny", "pause", "-o", "-"],
                              stdout=terminal, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(terminal)
        os.close(main)
    assert done.returncode == 2 and "refusing to write binary data to a terminal" in \
        done.stderr, done
