"""Durations in specs: a number of seconds, or a string as Go writes durations (``"90s"``,
``"5m"``, ``"1h30m"``, ``"500ms"``), so that a spec says ``HealthGrace: 5m`` rather than
``300``.

A field declared as :data:`Duration` holds seconds (a float) once decoded;
:func:`infrakit.spi.properties.decode_properties` turns its strings into seconds.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from msgspec import Meta

DURATION = "duration"
"""The key of a field's ``Meta.extra`` that marks it as a duration."""

Duration = Annotated[float, Meta(extra={DURATION: True})]
"""Seconds, written in a spec as a number or as a string such as ``"1h30m"``."""

FORMS = 'seconds as a number (90), or a string such as "90s", "5m", "1h30m" or "500ms"'
"""What a duration may be, in words, for errors and the spec reference."""

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
          "h": 3600.0}
_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_WHOLE = re.compile(r"[-+]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+")


def parse_duration(text: str) -> float:
    """Seconds in ``text``, written as Go's ``time.ParseDuration`` reads it (``"0"`` needs
    no unit). Raises :class:`ValueError` for anything else."""
    text = text.strip()
    if text in ("0", "+0", "-0"):
        return 0.0
    if not _WHOLE.fullmatch(text):
        raise ValueError(text)
    sign = -1.0 if text.startswith("-") else 1.0
    return sign * sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))


def format_duration(seconds: float) -> str:
    """``seconds`` as a spec may give it: ``60s``, ``10m``, ``1h30m``, ``500ms``."""
    if seconds and abs(seconds) < 1:
        return f"{seconds * 1000:g}ms"
    whole = int(seconds)
    if whole != seconds or whole < 60:
        return f"{seconds:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)


def is_duration(metadata: tuple[Any, ...]) -> bool:
    """Whether a field's ``Annotated`` metadata marks it as a :data:`Duration`."""
    return any(isinstance(m, Meta) and (m.extra or {}).get(DURATION) for m in metadata)
