"""Following a plugin as it changes: ``group ls -w``, ``group describe ID -w`` and
``group events --follow``, driven by the plugin's event stream rather than by a tight poll.

Each burst of events (those within :data:`COALESCE` seconds of the first) makes one
redraw; a slow refresh every ``--refresh`` seconds shows what changes without an event
(ages, health). While the stream is lost, or when the plugin has none (a plugin of the
reference), the view is refreshed every :data:`FALLBACK` seconds instead, and the user is
told so. On a terminal the view is redrawn in place; otherwise each view that differs from
the last is printed, after a blank line. Ctrl-C ends it, with status 0.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable
from contextlib import redirect_stdout

import click

from infrakit.cli.main import error_message
from infrakit.cli.output import printable
from infrakit.rpc.client import PluginUnreachable, RPCClient
from infrakit.rpc.events import Notice, Subscription
from infrakit.rpc.jsonrpc import RPCError
from infrakit.spi.errors import PluginError

REFRESH = 5.0
"""Seconds between two refreshes that no event asked for, by default (``--refresh``)."""
COALESCE = 0.1
"""Seconds of events that make one redraw."""
FALLBACK = 2.0
"""Seconds between refreshes while there is no event stream."""

_SAID = {
    "lost": "the event stream was lost ({reason}); reconnecting, and refreshing every {poll:g}s",
    "back": "the event stream is back",
    "unsupported": "the plugin has no event stream ({reason}); refreshing every {poll:g}s",
    "invalid": "the plugin publishes no events on {topic} ({reason}); refreshing every "
               "{poll:g}s",
}


def follow(rpc: RPCClient, topic: str, changed: Callable[[str], None], refresh: float,
           fallback: float = FALLBACK) -> None:
    """Call ``changed("")`` at once, then after each burst of events on ``topic`` and every
    ``refresh`` seconds (``fallback`` while the stream is missing), and ``changed(words)``
    when the stream's state changes; until Ctrl-C."""
    sub = Subscription(rpc, topic)
    poll = refresh
    try:
        changed("")
        while True:
            item = sub.get(poll)
            said = ""
            if item is not None and not isinstance(item, Notice):
                item = _coalesce(sub)
            if isinstance(item, Notice):
                poll = refresh if item.state == "back" else min(refresh, fallback)
                said = _SAID[item.state].format(reason=item.reason, poll=poll, topic=topic)
            changed(said)
    except KeyboardInterrupt:
        pass
    finally:
        sub.close()


def _coalesce(sub: Subscription) -> Notice | None:
    """Take the events that follow the first within :data:`COALESCE` seconds; a notice
    among them ends the burst, and is returned."""
    end = time.monotonic() + COALESCE
    while (left := end - time.monotonic()) > 0:
        item = sub.get(left)
        if item is None or isinstance(item, Notice):
            return item
    return None


def capture(draw: Callable[[], None]) -> str:
    """What ``draw`` prints, as text; a refusal it meets is shown in its place, so that a
    plugin that stops answering for a while does not end the watch."""
    out = io.StringIO()
    with redirect_stdout(out):
        try:
            draw()
        except click.ClickException as exc:
            click.echo(f"error: {printable(exc.format_message())}")
        except (PluginError, PluginUnreachable, RPCError) as exc:
            click.echo(f"error: {printable(error_message(exc))}")
    return out.getvalue()


class Screen:
    """Shows successive views of one thing: in place on a terminal, else each new one."""

    def __init__(self, title: str) -> None:
        self.tty = sys.stdout.isatty()
        self.title = title
        self._last: str | None = None
        self._status = ""

    def show(self, view: str, said: str = "") -> None:
        if said:
            self._status = said
            if not self.tty:
                click.echo(said, err=True)
        if self.tty:
            stamp = time.strftime("%H:%M:%S")
            status = f"\n{self._status}" if self._status else ""
            click.echo(f"\033[H\033[2J{self.title}    {stamp}\n\n{view.rstrip()}{status}")
        elif view != self._last:
            click.echo(("\n" if self._last is not None else "") + view.rstrip())
        self._last = view
        if said == _SAID["back"]:
            self._status = ""


def watch(rpc: RPCClient, topic: str, title: str, draw: Callable[[], None],
          refresh: float) -> None:
    """Show what ``draw`` prints, and again as it changes (see the module's docstring)."""
    screen = Screen(title)
    follow(rpc, topic, lambda said: screen.show(capture(draw), said), refresh)
