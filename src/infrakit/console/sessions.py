"""Who is logged in to the console: sessions (by cookie), their CSRF tokens, the one-time
login links of ``infrakit ui``, and the limit on failed logins.

Everything is kept in memory: a restart of the process logs everyone out, which is what
one wants of a console whose sessions grant a role. Secrets are random 256-bit values and
are kept only as their SHA-256 (a leak of the process's memory dump or a log does not leak
a usable cookie); the CSRF token is compared in constant time.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from infrakit.spi.access import Principal

SESSION_SECONDS = 8 * 3600.0
"""How long a session lasts from login (a working day); the cookie expires with it."""
MAX_SESSIONS = 1000
"""Sessions kept at once; past that, the oldest ends."""
LINK_SECONDS = 600.0
"""How long a one-time login link of ``infrakit ui`` may wait to be opened."""
FAILURES_ALLOWED = 5
"""Failed logins one client may make within :data:`FAILURE_WINDOW` seconds."""
FAILURE_WINDOW = 300.0


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class Session:
    principal: Principal
    csrf: str
    """The token every form of this session carries back (see :meth:`csrf_ok`)."""
    expires: float
    notice: str = ""
    """What the last action did, shown once on the next page (after its redirect)."""

    def csrf_ok(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.csrf.encode())

    def take_notice(self) -> str:
        notice, self.notice = self.notice, ""
        return notice


@dataclass
class Sessions:
    """The live sessions, by the digest of their cookie."""

    seconds: float = SESSION_SECONDS
    clock: Callable[[], float] = time.monotonic
    _live: dict[str, Session] = field(default_factory=dict)

    def open(self, principal: Principal) -> tuple[str, Session]:
        """A new session for ``principal``: its cookie value, and the session."""
        cookie = secrets.token_urlsafe(32)
        while len(self._live) >= MAX_SESSIONS:
            self._live.pop(next(iter(self._live)))
        session = Session(principal, secrets.token_urlsafe(32), self.clock() + self.seconds)
        self._live[_digest(cookie)] = session
        return cookie, session

    def get(self, cookie: str) -> Session | None:
        key = _digest(cookie)
        session = self._live.get(key)
        if session is not None and session.expires <= self.clock():
            del self._live[key]
            return None
        return session

    def close(self, cookie: str) -> None:
        self._live.pop(_digest(cookie), None)


@dataclass
class OneTimeLinks:
    """Login links that work once, within :data:`LINK_SECONDS`."""

    clock: Callable[[], float] = time.monotonic
    _waiting: dict[str, tuple[Principal, float]] = field(default_factory=dict)

    def issue(self, principal: Principal) -> str:
        token = secrets.token_urlsafe(32)
        self._waiting[_digest(token)] = (principal, self.clock() + LINK_SECONDS)
        return token

    def redeem(self, token: str) -> Principal | None:
        """Who the link logs in, once; None for a link used before, expired or unknown."""
        principal, expires = self._waiting.pop(_digest(token), (None, 0.0))
        return principal if expires > self.clock() else None


@dataclass
class LoginLimiter:
    """Failed logins, per client address: past :data:`FAILURES_ALLOWED` within
    :data:`FAILURE_WINDOW` seconds, a client is refused until the oldest of them is older
    than that (guessing a 256-bit token is hopeless anyway; this keeps a client from
    making the process do it a million times)."""

    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, collections.deque[float]] = field(default_factory=dict)

    def wait(self, client: str) -> float:
        """Seconds ``client`` must wait before it may try again (0: it may now)."""
        failures = self._failures.get(client)
        if failures is None:
            return 0.0
        now = self.clock()
        while failures and failures[0] <= now - FAILURE_WINDOW:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return 0.0
        if len(failures) < FAILURES_ALLOWED:
            return 0.0
        return failures[0] + FAILURE_WINDOW - now

    def failed(self, client: str) -> None:
        self._failures.setdefault(client, collections.deque()).append(self.clock())
