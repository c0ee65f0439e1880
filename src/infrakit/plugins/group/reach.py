"""Whether the group plugin's calls reach the plugins it calls: kept per plugin from the
outcome of every call, so that "plugin down" is what the groups actually met, whichever
verb met it (a describe, a health check, a provision).

A call that got an answer, even an error, reached its plugin; one that got none
(:class:`~infrakit.spi.errors.Unreachable`), or a plugin that is not running at all, did
not.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from infrakit.spi.calls import AsyncFlavorAPI, AsyncInstanceAPI, PluginLookup
from infrakit.spi.errors import PluginError, Unreachable


@dataclass(frozen=True)
class Down:
    """A plugin the last call did not reach."""

    reason: str
    """Why, in the words of the error the group met."""
    since: float
    """When the first of the calls in a row that did not reach it was made."""


class Reachability:
    """A :class:`~infrakit.spi.calls.PluginLookup` that passes every call on to ``plugins``
    and remembers, per plugin name, whether the last one reached it."""

    def __init__(self, plugins: PluginLookup) -> None:
        self._plugins = plugins
        self.down: dict[str, Down] = {}
        """The plugins the last call did not reach, by the name the groups call them."""

    def _reached(self, name: str) -> None:
        self.down.pop(name, None)

    def _missed(self, name: str, reason: str) -> None:
        if name not in self.down:
            self.down[name] = Down(reason, time.time())

    def _lookup(self, name: str, find: Callable[[str], Any]) -> Any:
        try:
            api = find(name)
        except PluginError as exc:  # not running: no socket to call
            self._missed(name, str(exc))
            raise
        return _Watched(api, name, self)

    def instance(self, name: str) -> AsyncInstanceAPI:
        return cast(AsyncInstanceAPI, self._lookup(name, self._plugins.instance))

    def flavor(self, name: str) -> AsyncFlavorAPI:
        return cast(AsyncFlavorAPI, self._lookup(name, self._plugins.flavor))

    async def close(self) -> None:
        await self._plugins.close()


class _Watched:
    """One plugin's client, each verb's outcome told to the :class:`Reachability`."""

    def __init__(self, api: Any, name: str, reach: Reachability) -> None:
        self._api = api
        self._name = name
        self._reach = reach

    def __getattr__(self, verb: str) -> Callable[..., Awaitable[Any]]:
        call = getattr(self._api, verb)

        async def watched(*args: Any, **kwargs: Any) -> Any:
            try:
                result = await call(*args, **kwargs)
            except Unreachable as exc:
                self._reach._missed(self._name, str(exc))
                raise
            except PluginError:  # it answered, with an error: it is up
                self._reach._reached(self._name)
                raise
            self._reach._reached(self._name)
            return result

        return watched
