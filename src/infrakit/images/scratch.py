"""An image from scratch, as ``docker load`` takes it, holding one executable.

The archive is Docker's own ``docker save`` format, which every engine loads (the OCI
layout only from Docker 25 on): ``manifest.json`` names the image's configuration and its
layers; the configuration names the entrypoint and, by digest, the one layer; the layer is
a tar holding the executable alone at ``/NAME``. No base image, no shell: the container's
only process is that file.

Everything is written the same way each time (no clock, owner or mode from the machine),
so one program and one tag always give the same image ID. The tars are written here
rather than with :mod:`tarfile`, which pads each archive to 10 KiB: a layer is one 512-byte
header, the file's blocks and the 1 KiB end marker.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile

#: Docker's names for the machines the executables of :mod:`infrakit.images.tinyelf` run on.
ARCHITECTURES = {32: "386", 64: "amd64"}

_BLOCK = 512
_TAG = re.compile(r"^[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
                  r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class TagError(ValueError):
    """A tag Docker would refuse, or one that would be pulled instead of used."""


def check_tag(tag: str) -> str:
    """``tag`` if it is ``name:tag`` in lower case with a tag other than ``latest``."""
    if not _TAG.match(tag):
        raise TagError(f"tag {tag!r}: write it as name:tag, the name in lower case "
                       f"(letters, digits, '.', '_', '-', '/'), e.g. infrakit/pause:1")
    if tag.endswith(":latest"):
        raise TagError(f"tag {tag!r}: pin a tag other than 'latest' (the Docker instance "
                       f"plugin refuses 'latest', since it never pulls)")
    return tag


def tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A tar of regular files (name -> content, mode), owned by root, dated 1970."""
    out = bytearray()
    for name, (data, mode) in files.items():
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), mode
        out += info.tobuf(format=tarfile.USTAR_FORMAT)
        out += data + bytes(-len(data) % _BLOCK)
    return bytes(out + bytes(2 * _BLOCK))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_tar(executable: bytes, name: str, tag: str, bits: int = 64) -> bytes:
    """A ``docker load`` archive of the image ``tag``: ``executable`` at ``/name``, its
    entrypoint. ``bits`` says whether it is an i386 or an x86-64 program."""
    layer = tar({name: (executable, 0o755)})
    config = json.dumps({
        "architecture": ARCHITECTURES[bits],
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Entrypoint": [f"/{name}"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{_digest(layer)}"]},
        "history": [{"created": "1970-01-01T00:00:00Z",
                     "created_by": f"infrakit image build-tiny {name}"}],
    }, sort_keys=True, separators=(",", ":")).encode()
    config_name = f"{_digest(config)}.json"
    layer_name = f"{_digest(layer)}/layer.tar"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [check_tag(tag)],
                            "Layers": [layer_name]}]).encode()
    return tar({config_name: (config, 0o644), layer_name: (layer, 0o644),
                "manifest.json": (manifest, 0o644)})
