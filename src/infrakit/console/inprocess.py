"""The manager's own group plugin object, called by the console as a client would call it.

A plugin object's verb may be ``async`` or plain (a ``nonblocking`` one such as
``summaries``, which the dispatcher calls in the event loop); the console awaits every verb,
so each is wrapped here to be awaited either way. Calling the object itself, not the
manager's socket, keeps the caller of each action in the context the plugin records it
from (:func:`~infrakit.spi.access.acting_as`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any, cast

from infrakit.spi.calls import AsyncGroupAPI


class _Awaited:
    def __init__(self, plugin: object) -> None:
        self._plugin = plugin

    def __getattr__(self, verb: str) -> Callable[..., Coroutine[Any, Any, Any]]:
        method = getattr(self._plugin, verb)

        async def call(*args: Any) -> Any:
            answer = method(*args)
            return await answer if inspect.isawaitable(answer) else answer

        return call


def awaited(plugin: object) -> AsyncGroupAPI:
    """``plugin``, each of its verbs to be awaited."""
    return cast(AsyncGroupAPI, _Awaited(plugin))
