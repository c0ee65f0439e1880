"""Shell completion of what only a running system knows: group IDs, plugin names, kinds.

Click completes commands and options itself (``_INFRAKIT_COMPLETE=bash_source infrakit``,
or ``infrakit completion bash``); these types add the values. A completion runs on every
Tab, so it asks quickly (a short timeout) and says nothing when it cannot: a shell that
prints an error in the middle of the line being typed is worse than no suggestion.
"""

from __future__ import annotations

import contextlib
import os
import stat
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

ASK_TIMEOUT = 0.5
"""Seconds a completion waits for the group plugin's answer."""


def _matching(values: list[str], incomplete: str) -> list[CompletionItem]:
    from click.shell_completion import CompletionItem  # only when completing

    return [CompletionItem(v) for v in sorted(values) if v.startswith(incomplete)]


def _group_plugin(ctx: click.Context) -> str | None:
    """The group plugin the command line being completed talks to (``--name``, by default
    ``group``; for ``infrakit NAME ...``, NAME); None when it names a manager by ``--url``,
    which a completion does not call."""
    parent = ctx.parent
    if parent is None:
        return None
    if parent.params.get("url"):
        return None
    name = parent.params.get("name") or parent.info_name
    return str(name) if name else None


def group_ids(ctx: click.Context) -> list[str]:
    """The IDs of the groups the plugin being talked to watches; none if it cannot say."""
    name = _group_plugin(ctx)
    if name is None:
        return []
    from infrakit.rpc.client import RPCClient
    from infrakit.rpc.discovery import socket_of
    from infrakit.rpc.typed import GroupClient

    with contextlib.suppress(Exception):  # silence: see the module's docstring
        found = socket_of(name)
        if found is None:
            return []
        with RPCClient(found[0], ASK_TIMEOUT) as rpc:
            return [g.id for g in GroupClient(rpc, found[1]).inspect_groups()]
    return []


def plugin_names() -> list[str]:
    """The names of the sockets in the plugin directory (none are called: a Tab must not
    wait on a plugin that hangs)."""
    from infrakit.rpc.paths import plugin_dir

    with contextlib.suppress(Exception), os.scandir(plugin_dir()) as entries:
        return [e.name for e in entries if stat.S_ISSOCK(e.stat(follow_symlinks=False).st_mode)]
    return []


class GroupID(click.types.StringParamType):
    """A group's ID; completes the IDs the group plugin watches."""

    name = "id"

    def shell_complete(self, ctx: click.Context, param: click.Parameter,
                       incomplete: str) -> list[CompletionItem]:
        return _matching(group_ids(ctx), incomplete)


class PluginName(click.types.StringParamType):
    """A running plugin's name; completes the sockets in the plugin directory."""

    name = "plugin"

    def shell_complete(self, ctx: click.Context, param: click.Parameter,
                       incomplete: str) -> list[CompletionItem]:
        return _matching(plugin_names(), incomplete)


class PluginKind(click.types.StringParamType):
    """``KIND[:NAME]`` of ``plugin start`` and ``plugin run``; completes the kinds."""

    name = "kind"

    def shell_complete(self, ctx: click.Context, param: click.Parameter,
                       incomplete: str) -> list[CompletionItem]:
        from infrakit.cli.kinds import KINDS

        return _matching(list(KINDS), incomplete)


BY_PARAMETER: dict[str, click.types.StringParamType] = {"group_id": GroupID(), "name": PluginName()}
"""The parameters every command that has them completes alike, by name: a group's ID, and
``--name``, the plugin a command talks to."""
