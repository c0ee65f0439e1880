"""``infrakit image``: build the tiny images of :mod:`infrakit.images`, offline."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from infrakit.images import scratch, tinyelf

DEFAULT_MESSAGE = "Hello from a tiny ELF!"


@click.group("image")
def command() -> None:
    """Build container images from bytes, with no toolchain and no base image."""


def _program(program: str, bits: int, message: str) -> bytes:
    if program == "pause":
        if bits != 64:
            raise click.BadParameter("pause is built for x86-64 only: leave out --bits, or "
                                     "give --bits 64", param_hint="--bits")
        return tinyelf.pause64()
    text = message.encode()
    if len(text) >= tinyelf.MAX_MESSAGE:
        raise click.BadParameter(f"{len(text)} bytes; hello prints at most "
                                 f"{tinyelf.MAX_MESSAGE - 1} and a new line",
                                 param_hint="--message")
    return (tinyelf.hello32 if bits == 32 else tinyelf.hello64)(text + b"\n")


def _write(output: str, data: bytes, mode: int) -> None:
    if output == "-":
        if sys.stdout.isatty():
            raise click.UsageError("refusing to write binary data to a terminal: give "
                                   "-o FILE, or pipe it (-o - | docker load)")
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    from infrakit.atomicfile import write_atomic

    write_atomic(Path(output), data, mode)


@command.command("build-tiny")
@click.argument("program", type=click.Choice(["hello", "pause"]))
@click.option("-o", "--output", required=True, metavar="FILE|-",
              help="Where to write it; - for stdout.")
@click.option("--tag", metavar="NAME:TAG", default=None,
              help="Write a `docker load` archive of an image with this tag (not 'latest'), "
                   "holding just the program as its entrypoint; without it, the "
                   "executable itself.")
@click.option("--bits", type=click.Choice(["32", "64"]), default="64", show_default=True,
              help="hello for i386 (its code inside the ELF header; needs a kernel with "
                   "32-bit support) or for x86-64. pause is x86-64 only.")
@click.option("--message", default=DEFAULT_MESSAGE, show_default=True,
              help="What hello prints, followed by a new line: at most 254 bytes.")
def build_tiny(program: str, output: str, tag: str | None, bits: str, message: str) -> None:
    """Write a tiny static Linux executable, or an image of it, built from bytes.

    \b
    hello  prints --message and exits 0 (76 bytes and up for 32-bit, 104 for 64-bit)
    pause  waits until SIGTERM or SIGINT, then exits 0 (116 bytes): a container that
           only needs to exist, and stops at once on `docker stop`

    \b
    Examples:
      infrakit image build-tiny pause --tag infrakit/pause:1 -o - | docker load
      infrakit image build-tiny hello --bits 32 --message 'Hello Docker world!' -o hello
    """
    executable = _program(program, int(bits), message)
    where = "stdout" if output == "-" else output
    if tag is None:
        _write(output, executable, 0o755)
        click.echo(f"{where}: {program}, {len(executable)} bytes", err=True)
        return
    try:
        archive = scratch.image_tar(executable, program, tag, int(bits))
    except scratch.TagError as exc:
        raise click.BadParameter(str(exc), param_hint="--tag") from None
    _write(output, archive, 0o644)
    click.echo(f"{where}: image {tag}, {len(archive)} bytes to docker load; its one layer "
               f"holds the {len(executable)}-byte {program} alone", err=True)
