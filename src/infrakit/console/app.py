"""The web console: every request under ``/ui/`` of a manager's TLS listener (or of
``infrakit ui``'s local port), routed to its page, its part of a page, its live stream or
its action.

Only the login page and the static assets are open; everything else needs a session,
which a login with a token (the manager's tokens file) or a one-time link
(``infrakit ui``) opens. A session's role decides what it may do, by the same check as a
JSON-RPC call's (:func:`~infrakit.spi.access.authorize`); an action also needs the
session's CSRF token, sent by ``POST`` only.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote

from infrakit.console import pages
from infrakit.console.actions import ACTIONS
from infrakit.console.live import Live
from infrakit.console.render import page, redirect, static, text
from infrakit.console.sessions import LoginLimiter, OneTimeLinks, Session, Sessions
from infrakit.rpc.stream import Stream
from infrakit.rpc.web import Request, Response
from infrakit.spi.access import Principal, acting_as, authorize
from infrakit.spi.calls import AsyncGroupAPI
from infrakit.spi.errors import Forbidden, PluginError

log = logging.getLogger("infrakit.console")

COOKIE = "infrakit_session"
Logins = Callable[[str], Principal | None]
"""Who a token logs in (a manager's :meth:`~infrakit.rpc.tokens.Tokens.who`)."""


@dataclass(frozen=True)
class Caller:
    """A request with a live session."""

    request: Request
    session: Session

    @property
    def principal(self) -> Principal:
        return self.session.principal


class Console:
    """The console's web handler (an :data:`~infrakit.rpc.web.WebHandler`)."""

    def __init__(self, groups: AsyncGroupAPI, events: Path, logins: Logins | None = None,
                 leadership: Callable[[], Awaitable[str]] | None = None) -> None:
        """``groups`` is the group plugin (the manager's own object, or a client of a
        plugin's socket); ``events`` the socket whose event stream makes pages live;
        ``logins`` checks a token typed on the login page (None: only one-time links log
        in); ``leadership`` says which manager leads."""
        self.groups = groups
        self.live = Live(events)
        self.logins = logins
        self.leadership = leadership
        self.sessions = Sessions()
        self.links = OneTimeLinks()
        self.limiter = LoginLimiter()

    def close(self) -> None:
        self.live.close()

    async def __call__(self, request: Request) -> Response | Stream:
        parts = [unquote(p) for p in request.path.removeprefix("/ui/").split("/")]
        if parts[0] == "static" and len(parts) == 2:
            return static(parts[1])
        if parts == ["login"]:
            return await self._login(request)
        session = self._session(request)
        if session is None:
            if request.headers.get("hx-request"):  # a part of a page: the whole page goes
                return Response(401, b"", (("HX-Redirect", "/ui/login"),))
            return redirect("/ui/login")
        caller = Caller(request, session)
        try:
            return await self._route(caller, parts)
        except Forbidden as exc:
            return pages.message(caller, 403, str(exc))
        except PluginError as exc:
            return pages.message(caller, 409, str(exc))

    async def _route(self, caller: Caller, parts: list[str]) -> Response | Stream:
        method = caller.request.method
        if method == "GET":
            return await self._get(caller, parts)
        if method != "POST":
            return text(405, "use GET for pages and POST for actions")
        form = _form(caller.request.body)
        if not caller.session.csrf_ok(form.get("csrf", "")):
            return pages.message(caller, 403, "This form is out of date (its CSRF token does "
                                              "not match your session): reload the page and "
                                              "try again.")
        if parts == ["logout"]:
            self.sessions.close(_cookie(caller.request))
            return redirect("/ui/login", (("Set-Cookie", _set_cookie("", 0)),))
        if len(parts) == 3 and parts[0] == "group" and parts[2] in ACTIONS:
            return await self._act(caller, parts[1], parts[2], form)
        return pages.message(caller, 404, "No such action.")

    async def _get(self, caller: Caller, parts: list[str]) -> Response | Stream:
        query = parse_qs(caller.request.query)
        if parts == [""]:
            return await pages.overview(self, caller)
        if parts == ["part", "groups"]:
            return await pages.groups_part(self, caller)
        if len(parts) == 2 and parts[0] == "group":
            return await pages.group(self, caller, parts[1])
        if len(parts) == 3 and parts[:2] == ["part", "group"]:
            return await pages.group_part(self, caller, parts[2])
        if parts == ["live"]:
            return self.live.stream(query.get("group", [""])[0])
        return pages.message(caller, 404, "No such page.")

    async def _act(self, caller: Caller, gid: str, name: str, form: dict[str, str]) -> Response:
        action = ACTIONS[name]
        authorize(caller.principal, action.method)
        back = f"/ui/group/{quote(gid, safe='')}"
        if action.warning is not None and form.get("confirm") != "yes":
            warning = await action.warning(self.groups, gid, form)
            if warning:
                return pages.confirm(caller, gid, name, action.label, warning, form, back)
        with acting_as(caller.principal):
            done = await action.run(self.groups, gid, form)
        log.info("console: %s did %s on group %s: %s", caller.principal, name, gid, done)
        caller.session.notice = done
        return redirect(back)

    # -- logging in ----------------------------------------------------------------------
    def _session(self, request: Request) -> Session | None:
        cookie = _cookie(request)
        return self.sessions.get(cookie) if cookie else None

    async def _login(self, request: Request) -> Response:
        wait = self.limiter.wait(request.client)
        if wait > 0:
            return page("login.html", 429, tokens=self.logins is not None,
                        error=f"Too many failed logins from your address ({request.client}): "
                              f"try again in {wait:.0f} seconds.")
        if request.method == "GET":
            link = parse_qs(request.query).get("token", [""])[0]
            if not link:
                return page("login.html", tokens=self.logins is not None, error="")
            principal = self.links.redeem(link)
            error = ("This login link has been used already or has expired: run "
                     "'infrakit ui' again for a new one.")
        elif request.method == "POST" and self.logins is not None:
            token = _form(request.body).get("token", "").strip()
            principal = self.logins(token) if token else None
            error = "That token is not valid here."
        else:
            return text(405, "log in with GET of a one-time link, or POST of a token")
        if principal is None:
            self.limiter.failed(request.client)
            return page("login.html", 401, tokens=self.logins is not None, error=error)
        cookie, _ = self.sessions.open(principal)
        log.info("console: %s logged in from %s", principal, request.client)
        return redirect("/ui/", (("Set-Cookie", _set_cookie(cookie,
                                                             int(self.sessions.seconds))),))

    def login_link(self, principal: Principal) -> str:
        """The path of a one-time link that logs ``principal`` in."""
        return "/ui/login?token=" + self.links.issue(principal)


def _form(body: bytes) -> dict[str, str]:
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        return {}
    return {name: values[-1] for name, values in fields.items()}


def _cookie(request: Request) -> str:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(request.headers.get("cookie", ""))
    except CookieError:
        return ""
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else ""


def _set_cookie(value: str, seconds: int) -> str:
    return (f"{COOKIE}={value}; Path=/ui/; Max-Age={seconds}; Secure; HttpOnly; "
            "SameSite=Strict")
