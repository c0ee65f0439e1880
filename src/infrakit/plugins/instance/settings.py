"""A plugin's settings from its environment, each overridable by the code that makes it.

The settings are read when the plugin is made, so a bad one is refused at start, with the
variable that holds it named, rather than at the first call that would use it.
"""

from __future__ import annotations

import os

from infrakit.spi.errors import PluginError


def seconds_setting(variable: str, default: float, given: float | None = None) -> float:
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
