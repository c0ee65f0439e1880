"""The console's security, over real HTTP to ``infrakit ui`` and to a manager's TLS
listener: a one-time link that works once, strict cookies, a CSP that allows no inline
script or style, CSRF tokens on every action, confirmation before anything is destroyed,
rate-limited logins, and escaped IDs, tags and event texts."""

from __future__ import annotations

import http.client
import json
import re
import ssl
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from infrakit.console.render import environment
from infrakit.console.sessions import FAILURES_ALLOWED, LoginLimiter, OneTimeLinks, Sessions
from infrakit.console.view import summary
from infrakit.spi.access import Principal, Role
from infrakit.spi.group import GroupEvent, GroupStatus, MemberStatus
from tests.conftest import Cli, Processes, StartPlugin
from tests.helpers import PY, wait_until
from tests.test_manager_tcp import free_port

Answer = tuple[int, dict[str, str], str]
PAYLOAD_ID = "<svg/onload=alert(1)>"
PAYLOAD_TAG = "<script>alert(2)</script>\x1b[2J\x1b]0;pwned\x07"


def request(port: int, method: str, path: str, cookie: str = "",
            form: dict[str, str] | None = None, tls: Path | None = None) -> Answer:
    conn: http.client.HTTPConnection
    if tls is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                           context=ssl.create_default_context(cafile=str(tls)))
    headers = {"Cookie": cookie} if cookie else {}
    body = None
    if form is not None:
        body = urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        fields = {k.lower(): v for k, v in resp.getheaders()}
        return resp.status, fields, resp.read().decode()
    finally:
        conn.close()


class Local:
    """``infrakit ui`` on a port of 127.0.0.1, showing the group plugin ``group``."""

    def __init__(self, procs: Processes, home: Path) -> None:
        self.port = free_port()
        log = home / "test-logs" / "ui.log"
        procs.spawn([PY, "-m", "infrakit", "ui", "--port", str(self.port)], log)
        found = wait_until(lambda: re.search(r"http://127\.0\.0\.1:\d+(/ui/login\?token=\S+)",
                                             log.read_text() if log.exists() else ""),
                           15, what="infrakit ui to print its link")
        assert found is not None
        self.link = found.group(1)

    def log_in(self) -> str:
        status, fields, _ = request(self.port, "GET", self.link)
        assert status == 303, status
        return fields["set-cookie"].split(";")[0]

    def csrf(self, cookie: str) -> str:
        _, _, page = request(self.port, "GET", "/ui/", cookie)
        return str(re.findall(r'name="csrf" value="([^"]+)"', page)[0])


def commit(cli: Cli, tmp_path: Path, size: int) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"ID": PAYLOAD_ID, "Properties": {
        "Allocation": {"Size": size}, "Instance": {"Plugin": "instance-file"},
        "Flavor": {"Plugin": "flavor-vanilla", "Properties": {"Tags": {"t": PAYLOAD_TAG}}}}}))
    done = cli("group", "commit", str(spec))
    assert done.returncode == 0, done.stderr


@pytest.fixture
def local(procs: Processes, home: Path, start_plugin: StartPlugin, cli: Cli,
          tmp_path: Path) -> Local:
    start_plugin("instance-file")
    start_plugin("flavor-vanilla")
    start_plugin("group")
    commit(cli, tmp_path, 2)
    return Local(procs, home)


def _members(local: Local, cookie: str) -> list[str]:
    _, _, part = request(local.port, "GET", f"/ui/part/group/{quote(PAYLOAD_ID, safe='')}",
                         cookie)
    return re.findall(r'data-member="([^"]+)"', part)


def test_the_login_link_works_once_and_its_cookie_is_strict(local: Local) -> None:
    status, fields, _ = request(local.port, "GET", "/ui/")
    assert status == 303 and fields["location"] == "/ui/login"  # nothing without a session
    status, fields, _ = request(local.port, "GET", local.link)
    assert status == 303 and fields["location"] == "/ui/"  # the token leaves the address bar
    cookie = fields["set-cookie"]
    for attribute in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/ui/", "Max-Age=28800"):
        assert attribute in cookie.split("; "), cookie
    assert fields["referrer-policy"] == "no-referrer"
    again, _, page = request(local.port, "GET", local.link)
    assert again == 401 and "has been used already or has expired" in page
    status, fields, page = request(local.port, "GET", "/ui/", cookie.split(";")[0])
    assert status == 200 and "(admin)</span>" in page  # the local user, as the socket's owner
    csp = fields["content-security-policy"]
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert not re.search(r"<script(?![^>]*\bsrc=)", page), "an inline script"
    assert not re.search(r"\sstyle=|<style", page), "an inline style"


def test_every_action_needs_post_and_the_sessions_csrf_token(local: Local) -> None:
    cookie = local.log_in()
    path = f"/ui/group/{quote(PAYLOAD_ID, safe='')}/pause"
    status, _, page = request(local.port, "POST", path, cookie, {"csrf": "forged"})
    assert status == 403 and "CSRF token does not match" in page
    status, _, page = request(local.port, "POST", path, cookie, {})
    assert status == 403
    status, _, _ = request(local.port, "GET", path, cookie)
    assert status == 404  # no action is taken by GET
    status, fields, _ = request(local.port, "POST", path, cookie, {"csrf": local.csrf(cookie)})
    assert status == 303
    _, _, page = request(local.port, "GET", fields["location"], cookie)
    assert "Paused the rolling update" in page  # said once, after the redirect


def test_destroying_a_member_asks_first(local: Local) -> None:
    cookie = local.log_in()
    wait_until(lambda: len(_members(local, cookie)) == 2, 15, what="2 members")
    victim = _members(local, cookie)[0]
    path = f"/ui/group/{quote(PAYLOAD_ID, safe='')}/replace"
    form = {"csrf": local.csrf(cookie), "member": victim}
    status, _, page = request(local.port, "POST", path, cookie, form)
    assert status == 200 and f"Member &#39;{victim}&#39;" in page and 'name="confirm"' in page
    assert victim in _members(local, cookie)  # nothing happened yet
    status, _, _ = request(local.port, "POST", path, cookie, {**form, "confirm": "yes"})
    assert status == 303
    wait_until(lambda: victim not in _members(local, cookie), 15, what="the member replaced")


def test_a_groups_page_shows_its_spec_and_the_change_from_the_one_before(
        local: Local, cli: Cli, tmp_path: Path) -> None:
    cookie = local.log_in()
    path = f"/ui/group/{quote(PAYLOAD_ID, safe='')}"
    _, _, page = request(local.port, "GET", path, cookie)
    assert 'id="spec"' in page and 'id="spec-diff"' not in page  # nothing before it
    commit(cli, tmp_path, 3)
    _, _, page = request(local.port, "GET", path, cookie)
    diff = page.split('id="spec-diff">')[1].split("</pre>")[0]
    assert '<span class="del">-      &#34;Size&#34;: 2</span>' in diff
    assert '<span class="add">+      &#34;Size&#34;: 3</span>' in diff


def test_ids_tags_and_texts_are_escaped(local: Local) -> None:
    cookie = local.log_in()
    _, _, overview = request(local.port, "GET", "/ui/part/groups", cookie)
    _, _, page = request(local.port, "GET", f"/ui/group/{quote(PAYLOAD_ID, safe='')}", cookie)
    for html in (overview, page):
        assert "&lt;svg/onload=alert(1)&gt;" in html and "<svg" not in html
    assert "<script>alert(2)" not in page and "&lt;script&gt;alert(2)" in page
    assert "\x1b" not in page and "\x07" not in page


def test_what_plugins_say_is_shown_escaped_never_acted_on() -> None:
    """A plugin names its members and gives reasons: markup and terminal escapes in them
    are shown as text."""
    evil = "<img src=x onerror=alert(3)>\x1b[31m\r\n"
    status = GroupStatus(id=evil, target=1, converged=False, in_flight=[], outdated=0,
                         update_paused=False, unhealthy=1, max_unhealthy=0,
                         breaker_open=False, errors=[evil], failures=1,
                         members=[MemberStatus(id=evil, health="unhealthy", age=1.0,
                                               current=True, reason=evil, last_exit=evil)])
    event = GroupEvent(seq=1, time=time.time(), group=evil, member=evil, kind="member died",
                       reason=evil, actor=evil)
    html = environment().get_template("group_part.html").render(
        gid=evil, status=status, row=summary(status), progress=None, events=[event],
        csrf="c", who=Principal("x", Role.VIEWER), refresh=5, operator=False)
    assert "<img" not in html and "\x1b" not in html and "\r" not in html
    assert html.count("&lt;img src=x onerror=alert(3)&gt;\\x1b[31m\\r") >= 5


def test_failed_logins_are_limited_per_client(local: Local) -> None:
    for _ in range(FAILURES_ALLOWED):
        status, _, _ = request(local.port, "GET", "/ui/login?token=guess")
        assert status == 401
    status, _, page = request(local.port, "GET", local.link)  # even the right one, for now
    assert status == 429 and "Too many failed logins from your address (127.0.0.1)" in page


def test_the_manager_serves_the_console_beside_json_rpc(
        procs: Processes, home: Path, cli: Cli, start_plugin: StartPlugin,
        tmp_path: Path) -> None:
    from tests.console_browser import start_stack

    stack = start_stack(procs, home, cli, start_plugin, tmp_path)
    port, cert = int(stack.url.split(":")[2].split("/")[0]), tmp_path / "cert.pem"
    status, _, page = request(port, "GET", "/ui/login", tls=cert)
    assert status == 200 and 'id="token"' in page
    status, fields, _ = request(port, "POST", "/ui/login", form={"token": "olive-token-"
                                "0123456789abcdef"}, tls=cert)
    assert status == 303 and "Secure" in fields["set-cookie"]
    status, _, _ = request(port, "POST", "/", tls=cert)
    assert status == 401  # JSON-RPC still wants its bearer token


def test_sessions_links_and_the_limiter_expire() -> None:
    now = [0.0]
    sessions = Sessions(seconds=60, clock=lambda: now[0])
    cookie, session = sessions.open(Principal("a", Role.VIEWER))
    assert sessions.get(cookie) is session and sessions.get("other") is None
    links = OneTimeLinks(clock=lambda: now[0])
    stale = links.issue(Principal("a", Role.ADMIN))
    limiter = LoginLimiter(clock=lambda: now[0])
    for _ in range(FAILURES_ALLOWED):
        limiter.failed("1.2.3.4")
    assert limiter.wait("1.2.3.4") > 0 and limiter.wait("5.6.7.8") == 0
    now[0] = 3600.0
    assert sessions.get(cookie) is None  # expired
    assert links.redeem(stale) is None
    assert limiter.wait("1.2.3.4") == 0
    fresh = links.issue(Principal("a", Role.ADMIN))
    assert links.redeem(fresh) == Principal("a", Role.ADMIN) and links.redeem(fresh) is None
