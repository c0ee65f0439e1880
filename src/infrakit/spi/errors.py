"""Exceptions a plugin raises to report a fault to its caller, and the two faults a caller
meets when it calls another plugin.

The runtime turns a :class:`PluginError` into JSON-RPC error -32000 with the exception's
message, unchanged, so a plugin author phrases the message for the user: name the field and
the reason.
"""

from __future__ import annotations


class PluginError(Exception):
    """A fault in the plugin's own domain: bad properties, an unknown ID, a provider error."""


class NotFoundError(PluginError):
    """The named instance, group or type does not exist here."""


class Forbidden(PluginError):
    """The caller's role does not allow the method it called (see
    :mod:`infrakit.spi.access`). Answered with its own JSON-RPC code, :attr:`code`, so that
    a script tells a refusal by role from any other failure."""

    code = -32003


class CallFailed(PluginError):
    """Another plugin answered a call with an error: it says it did not do what it was
    asked. The message names the plugin, so a user knows where to look."""

    def __init__(self, plugin: str, kind: str, reason: str, code: int = -32000) -> None:
        super().__init__(f"{kind} plugin {plugin!r}: {reason}")
        self.plugin = plugin
        self.reason = reason
        """The plugin's own words."""
        self.code = code
        """The JSON-RPC error code it answered with."""


class Unsupported(CallFailed):
    """The other plugin does not serve the method called: one of our extensions, asked of
    a plugin that predates it (the caller falls back to the reference's behaviour)."""


class Unreachable(PluginError):
    """Another plugin gave no answer (not running, or too slow): the call may or may not
    have happened, so whatever it was asked to make may exist."""

    def __init__(self, plugin: str, kind: str, reason: str) -> None:
        super().__init__(f"{kind} plugin {plugin!r} is not reachable: {reason}")
        self.plugin = plugin
        self.reason = reason
