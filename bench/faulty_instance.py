"""An instance plugin that fails on purpose: it passes every call on to another instance
plugin, except a share of them (the fraction in a file, read at each call, so a soak can
change it while the plugin runs), which it answers with an error instead, as a flaky
cloud API would. Run: ``python -m bench.faulty_instance NAME TARGET RATE_FILE``."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

from infrakit.rpc.client import AsyncRPCClient
from infrakit.rpc.paths import socket_path
from infrakit.rpc.server import serve
from infrakit.rpc.typed import AsyncInstanceClient
from infrakit.spi import Description, Spec
from infrakit.spi.calls import AsyncInstanceAPI
from infrakit.spi.errors import PluginError


class FaultyInstance:
    def __init__(self, target: str, rate_file: Path) -> None:
        self.target = target
        self.rate_file = rate_file
        self._rpc: AsyncRPCClient | None = None
        self.injected = 0

    def _client(self) -> AsyncInstanceAPI:
        if self._rpc is None:
            self._rpc = AsyncRPCClient(socket_path(self.target), timeout=60)
        return AsyncInstanceClient(self._rpc)

    def _maybe_fail(self, verb: str) -> None:
        try:
            rate = float(self.rate_file.read_text())
        except (OSError, ValueError):
            rate = 0.0
        if random.random() < rate:
            self.injected += 1
            raise PluginError(f"injected fault in {verb} (#{self.injected})")

    async def validate(self, properties: Any) -> None:
        await self._client().validate(properties)

    async def provision(self, spec: Spec) -> str:
        self._maybe_fail("Provision")
        return await self._client().provision(spec)

    async def label(self, instance: str, labels: dict[str, str]) -> None:
        self._maybe_fail("Label")
        await self._client().label(instance, labels)

    async def destroy(self, instance: str) -> None:
        self._maybe_fail("Destroy")
        await self._client().destroy(instance)

    async def describe_instances(self, tags: dict[str, str],
                                 properties: bool) -> list[Description]:
        self._maybe_fail("DescribeInstances")
        return await self._client().describe_instances(tags, properties)

    async def stop(self) -> None:
        if self._rpc is not None:
            await self._rpc.close()


if __name__ == "__main__":
    name, target, rate_file = sys.argv[1:4]
    serve(name, instance=FaultyInstance(target, Path(rate_file)))
