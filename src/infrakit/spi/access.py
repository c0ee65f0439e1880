"""Who may call what: the roles a caller holds, the caller of the call being served, and
the check of one against the other.

Every method of every interface says, in its :class:`~infrakit.spi.methods.Method` entry,
the least role that may call it (``viewer`` unless it changes something), so that the one
method table decides both what a call means on the wire and who may make it. The runtime
checks :func:`authorize` before it calls a plugin method, and runs the call under
:func:`acting_as` its caller, so that what the call records (a group's event history) can
say who asked for it (:func:`current_actor`).
"""

from __future__ import annotations

import contextvars
import enum
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from infrakit.spi.errors import Forbidden

if TYPE_CHECKING:
    from infrakit.spi.methods import Method


class Role(enum.IntEnum):
    """What a caller may do; each role may do everything the roles below it may."""

    VIEWER = 1
    """Every read: describe, inspect, status, events, usage, metrics, logs."""
    OPERATOR = 2
    """Adds the verbs that run groups: commit, set-size, destroy-instances, and pause,
    resume or cancel of a rolling update; and the instance and flavor plugins' verbs."""
    ADMIN = 3
    """Adds the verbs that end groups (destroy, free) and the manager's own settings."""

    @property
    def word(self) -> str:
        """The role as the tokens file and every message spell it: ``viewer``."""
        return self.name.lower()

    def __str__(self) -> str:
        return self.word

    @classmethod
    def named(cls, word: str) -> Role:
        """The role spelt ``word``; a :class:`ValueError` naming the roles otherwise."""
        try:
            return cls[word.upper()]
        except KeyError:
            raise ValueError(f"{word!r} is not a role; the roles are "
                             f"{', '.join(r.word for r in cls)}") from None


ROLE_WORDS = tuple(r.word for r in Role)
"""The roles' names, weakest first."""


@dataclass(frozen=True)
class Principal:
    """A caller: the name its events are recorded under, and its role."""

    name: str
    role: Role

    def __str__(self) -> str:
        return f"{self.name} ({self.role.word})"


ACTOR_HEADER = "Infrakit-Actor"
"""The HTTP header a manager that forwards a call to the leader names the call's caller
in; the leader believes it only from an ``admin`` (the managers' own token, or a local
user), who could do anything anyway."""
MAX_NAME = 128
"""Characters of a caller's name an :data:`ACTOR_HEADER` may carry."""


def on_behalf(forwarder: Principal, name: str) -> Principal:
    """The caller a call forwarded by ``forwarder`` was made by: ``name``, as ``admin``
    (the forwarding manager checked its role); ``forwarder`` itself unless it is an
    ``admin`` and ``name`` is a printable name."""
    if forwarder.role is not Role.ADMIN or not 0 < len(name) <= MAX_NAME \
            or not name.isprintable() or name.strip() != name:
        return forwarder
    return Principal(name, Role.ADMIN)


_ACTOR: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "infrakit_actor", default=None)


def current_actor() -> Principal | None:
    """The caller of the call being served, or None outside one (the controller's own
    work, a plugin object called in-process)."""
    return _ACTOR.get()


def actor_name() -> str:
    """The name the call being served is recorded under; empty outside one."""
    principal = _ACTOR.get()
    return "" if principal is None else principal.name


class _Acting:
    """A plain context manager, not a generator: the server enters one per call, and a
    generator-based one cost it 3 us a call, a tenth of a whole call's work."""

    __slots__ = ("_principal", "_reset")

    def __init__(self, principal: Principal | None) -> None:
        self._principal = principal

    def __enter__(self) -> Principal | None:
        self._reset = _ACTOR.set(self._principal)
        return self._principal

    def __exit__(self, *_: object) -> None:
        _ACTOR.reset(self._reset)


def acting_as(principal: Principal | None) -> AbstractContextManager[Principal | None]:
    """Run the block (and the tasks it starts) as ``principal``'s call."""
    return _Acting(principal)


def authorize(principal: Principal, method: Method[Any, Any]) -> None:
    """Raise :class:`Forbidden`, saying which role is needed, unless ``principal`` may
    call ``method``."""
    if principal.role < method.role:
        raise Forbidden(f"token {principal.name!r} ({principal.role.word}) may not call "
                        f"{method.wire}: it needs the {method.role.word} role")
