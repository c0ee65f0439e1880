"""Exceptions a plugin raises to report a fault to its caller.

The runtime turns a :class:`PluginError` into JSON-RPC error -32000 with the exception's
message, unchanged, so a plugin author phrases the message for the user: name the field and
the reason.
"""


class PluginError(Exception):
    """A fault in the plugin's own domain: bad properties, an unknown ID, a provider error."""


class NotFoundError(PluginError):
    """The named instance, group or type does not exist here."""
