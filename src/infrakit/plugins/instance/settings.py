"""How long a cloud plugin waits on its provider, from its environment, each overridable
by the code that makes the plugin.

The settings are read when the plugin is made, so a bad one is refused at start, with the
variable that holds it named, rather than at the first call that would use it. Every cloud
plugin names them alike, ``$INFRAKIT_<KIND>_VISIBILITY_DEADLINE`` and
``$INFRAKIT_<KIND>_RETRY_SECONDS``, with the same defaults.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from infrakit.spi.errors import PluginError

DEFAULT_VISIBILITY_DEADLINE = 600.0
DEFAULT_RETRY_SECONDS = 30.0


class ProviderWaits(NamedTuple):
    visibility_deadline: float
    """Seconds an instance is described unlisted, or hidden listed (see visibility)."""
    retry_seconds: float
    """Seconds a call whose faults may pass is retried (see retry)."""


def provider_waits(kind: str, visibility_deadline: float | None = None,
                   retry_seconds: float | None = None) -> ProviderWaits:
    """The waits of plugin ``kind`` (``AWS``, ``CLOUD``): each as given, else from its
    environment variable, else the default."""
    return ProviderWaits(
        _seconds(f"INFRAKIT_{kind}_VISIBILITY_DEADLINE", DEFAULT_VISIBILITY_DEADLINE,
                 visibility_deadline),
        _seconds(f"INFRAKIT_{kind}_RETRY_SECONDS", DEFAULT_RETRY_SECONDS, retry_seconds))


def _seconds(variable: str, default: float, given: float | None) -> float:
    """``given``, else a positive number of seconds from the environment variable
    ``variable``, else ``default``."""
    if given is not None:
        return given
    raw = os.environ.get(variable)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise PluginError(f"${variable}: {raw!r} is not a number of seconds") from None
    if value <= 0:
        raise PluginError(f"${variable}: must be positive")
    return value
