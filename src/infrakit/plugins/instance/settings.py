"""How long a cloud plugin waits on its provider, from its environment, each overridable
by the code that makes the plugin.

The settings are read when the plugin is made, so a bad one is refused at start, with the
variable that holds it named, rather than at the first call that would use it. Every cloud
plugin names them alike, ``$INFRAKIT_<KIND>_VISIBILITY_DEADLINE`` and
``$INFRAKIT_<KIND>_RETRY_SECONDS``, with the same defaults, and parses them with the one
settings table's rules (:mod:`infrakit.settings`).
"""

from __future__ import annotations

from typing import NamedTuple

from infrakit.settings import Setting, SettingError, seconds
from infrakit.spi.errors import PluginError


class ProviderWaits(NamedTuple):
    visibility_deadline: float
    """Seconds an instance is described unlisted, or hidden listed (see visibility)."""
    retry_seconds: float
    """Seconds a call whose faults may pass is retried (see retry)."""


def wait_settings(kind: str) -> tuple[Setting[float], Setting[float]]:
    """The settings of plugin ``kind`` (``AWS``, ``CLOUD``)."""
    return (Setting(f"INFRAKIT_{kind}_VISIBILITY_DEADLINE", "600", seconds,
                    "Seconds an instance is described before its provider lists it, or "
                    "hidden after it was destroyed."),
            Setting(f"INFRAKIT_{kind}_RETRY_SECONDS", "30", seconds,
                    "Seconds a provider call whose fault may pass is retried."))


def provider_waits(kind: str, visibility_deadline: float | None = None,
                   retry_seconds: float | None = None) -> ProviderWaits:
    """The waits of plugin ``kind``: each as given, else from its environment variable,
    else the default."""
    visibility, retry = wait_settings(kind)
    try:
        return ProviderWaits(
            visibility.read() if visibility_deadline is None else visibility_deadline,
            retry.read() if retry_seconds is None else retry_seconds)
    except SettingError as exc:
        raise PluginError(str(exc)) from None
