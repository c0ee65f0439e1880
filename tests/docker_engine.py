"""A private Docker engine for the tests and the benchmark of the docker plugin.

The daemon runs in a short temporary directory of its own (data, exec state, pid file and
socket), with no bridge and no firewall changes, so it touches nothing of the machine's and
containers get loopback only (``network_mode="none"``) or the host's network. There is no
registry: the engine gets two images of its own. :data:`PAUSE_IMAGE` is the tiny ``pause``
of :mod:`infrakit.images`, loaded as ``docker load`` would: a container that only needs to
exist runs it, and stops at once on ``docker stop``. :data:`IMAGE` is imported from a tar
holding Debian's static busybox, for the containers that need a shell or a server.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infrakit.images import scratch, tinyelf
from tests.helpers import stop_process

BUSYBOX = Path("/bin/busybox")
IMAGE = "infrakit-test/busybox:1"
PAUSE_IMAGE = "infrakit-test/pause:1"
APPLETS = ("sh", "sleep", "httpd", "nc", "echo", "cat", "ls", "true", "kill", "wget")
START_TIMEOUT = 30.0


def engine_problem() -> str | None:
    """Why a private engine cannot run here, or None."""
    if os.geteuid() != 0:
        return "a private dockerd needs root"
    if shutil.which("dockerd") is None:
        return "dockerd is not installed (Debian package docker.io)"
    if not BUSYBOX.is_file():
        return f"{BUSYBOX} is missing (Debian package busybox-static)"
    return None


@dataclass
class Engine:
    """A running private dockerd."""

    root: Path
    proc: subprocess.Popen[bytes]
    api: Any
    """The Docker SDK's low-level client of this engine."""

    @property
    def host(self) -> str:
        """Its ``DOCKER_HOST``."""
        return f"unix://{self.root / 's'}"

    def log(self) -> str:
        return (self.root / "dockerd.log").read_text(errors="replace")

    def remove_all_containers(self) -> None:
        for c in self.api.containers(all=True):
            with contextlib.suppress(Exception):
                self.api.remove_container(c["Id"], force=True, v=True)


def busybox_tar() -> bytes:
    """A root file system: ``/bin/busybox``, its applets as symlinks, and ``/tmp``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        tmp = tarfile.TarInfo("tmp")
        tmp.type, tmp.mode = tarfile.DIRTYPE, 0o1777
        tar.addfile(tmp)
    return out.getvalue()


def load(api: Any, archive: bytes) -> list[str]:
    """``docker load`` of ``archive``: the tags it loaded; the engine's error, if any,
    raised."""
    loaded = []
    for event in api.load_image(archive):
        if "error" in event:
            raise RuntimeError(f"docker load failed: {event['error']}")
        stream = event.get("stream", "")
        if stream.startswith("Loaded image: "):
            loaded.append(stream.removeprefix("Loaded image: ").strip())
    return loaded


@contextlib.contextmanager
def private_engine() -> Iterator[Engine]:
    """Start a dockerd, put :data:`IMAGE` and :data:`PAUSE_IMAGE` on it, and stop it and
    remove every trace of it at the end."""
    import docker

    root = Path(tempfile.mkdtemp(prefix="dk", dir="/tmp"))  # socket paths are short
    with open(root / "dockerd.log", "wb") as log:
        proc = subprocess.Popen(
            ["dockerd", "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
             "--pidfile", str(root / "dockerd.pid"), "-H", f"unix://{root / 's'}",
             "--bridge=none", "--iptables=false"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    api = None
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while api is None:
            if proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {proc.returncode}:\n"
                                   f"{(root / 'dockerd.log').read_text(errors='replace')}")
            with contextlib.suppress(docker.errors.DockerException):
                api = docker.DockerClient(base_url=f"unix://{root / 's'}",
                                          version="auto").api
            if api is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dockerd did not answer in {START_TIMEOUT:g} s")
                time.sleep(0.1)
        repository, tag = IMAGE.split(":")
        api.import_image_from_data(busybox_tar(), repository=repository, tag=tag)
        load(api, scratch.image_tar(tinyelf.pause64(), "pause", PAUSE_IMAGE))
        yield Engine(root, proc, api)
    finally:
        if api is not None:  # dockerd would wait for each container to stop
            with contextlib.suppress(Exception):
                Engine(root, proc, api).remove_all_containers()
        stop_process(proc, timeout=30)
        shutil.rmtree(root, ignore_errors=True)
