"""How small the tiny images are, and what that changes for a container's life: the sizes
of the executables of ``infrakit.images.tinyelf``, of their ``docker load`` archives and
of the images as a private Docker engine reports them, beside the busybox image the docker
tests used before; then, for a member that only needs to exist (busybox ``sh`` trapping
TERM, and ``pause``), how long the engine takes to start it and to ``docker stop`` it.
Needs what the docker tests need: root, ``dockerd`` and busybox-static."""

from __future__ import annotations

import argparse
import statistics
import time

from infrakit.images import scratch, tinyelf
from tests.docker_engine import (
    IMAGE,
    PAUSE_IMAGE,
    Engine,
    engine_problem,
    load,
    private_engine,
)

MESSAGE = b"Hello Docker world!\n"
SHELL_MEMBER = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]


def sizes(engine: Engine) -> None:
    api = engine.api
    programs = [("hello, i386", tinyelf.hello32(MESSAGE), 32, "infrakit-bench/hello:32"),
                ("hello, x86-64", tinyelf.hello64(MESSAGE), 64, "infrakit-bench/hello:64"),
                ("pause, x86-64", tinyelf.pause64(), 64, PAUSE_IMAGE)]
    print("| program | executable | `docker load` archive | image, as the engine reports it |")
    print("|---|---|---|---|")
    for what, program, bits, tag in programs:
        name = what.split(",")[0]
        archive = scratch.image_tar(program, name, tag, bits)
        if tag != PAUSE_IMAGE:  # the engine has that one already
            load(api, archive)
        print(f"| {what} | {len(program)} B | {len(archive):,} B | "
              f"{api.inspect_image(tag)['Size']:,} B |")
    busybox = api.inspect_image(IMAGE)["Size"]
    print(f"| busybox (the tests' image before), x86-64 | | | {busybox:,} B |")


def lifetimes(engine: Engine, rounds: int) -> None:
    api = engine.api
    host = api.create_host_config(network_mode="none")
    print(f"\n| member ({rounds} rounds) | create and start, median | docker stop, median "
          f"(max) |")
    print("|---|---|---|")
    for what, image, command in (("busybox sh, trapping TERM", IMAGE, SHELL_MEMBER),
                                 ("pause", PAUSE_IMAGE, None)):
        up, down = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            made = api.create_container(image, command, host_config=host)["Id"]
            api.start(made)
            up.append(time.perf_counter() - start)
            start = time.perf_counter()
            api.stop(made, timeout=10)
            down.append(time.perf_counter() - start)
            if api.inspect_container(made)["State"]["ExitCode"] != 0:
                raise SystemExit(f"{what} did not exit with status 0 on docker stop")
            api.remove_container(made)
        print(f"| {what} | {statistics.median(up) * 1000:.0f} ms | "
              f"{statistics.median(down) * 1000:.0f} ms ({max(down) * 1000:.0f} ms) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    problem = engine_problem()
    if problem is not None:
        raise SystemExit(f"cannot run a private Docker engine: {problem}")
    with private_engine() as engine:
        sizes(engine)
        lifetimes(engine, args.rounds)


if __name__ == "__main__":
    main()
