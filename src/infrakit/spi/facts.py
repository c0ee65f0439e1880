"""The property names through which an instance plugin tells what a user looks for: where
a member answers and which process it is.

``Description.Properties`` is free-form; ``infrakit group describe -o wide`` and
``infrakit instance describe -o wide`` read these well-known keys from it, so that a plugin
gets the ADDRESS, PORTS and PID columns by naming its facts so:

- ``Address``: the address the instance answers on (``127.0.0.1``, ``10.0.3.7``,
  ``web-1.example.net``). Read too, in this order, where a provider names it its own way:
  ``PublicIpAddress``, ``PrivateIpAddress`` (EC2), ``PublicIPs``, ``PrivateIPs`` (libcloud:
  lists, the first is shown).
- ``Ports``: the ports it listens on: a map of a name to a port (``{"http": 8080}``) or a
  list of ports.
- ``PID``: its process on the plugin's machine (a local process, a VM's QEMU).

Times among the properties are shown as ISO 8601 timestamps in human output when they are
seconds since the epoch under a name that says it is a time: ``Started``, ``Created``, or
a name ending in ``At`` or ``Time`` (``StartedAt``, ``LaunchTime``). Strings are shown as
they are, so a plugin that has an ISO time may give it as one.
"""

from __future__ import annotations

from typing import Any

ADDRESS_KEYS = ("Address", "PublicIpAddress", "PrivateIpAddress", "PublicIPs", "PrivateIPs")
PORTS_KEY = "Ports"
PID_KEY = "PID"
TIME_NAMES = ("Started", "Created")
TIME_SUFFIXES = ("At", "Time")
EPOCH_RANGE = (1e9, 1e10)
"""Seconds since the epoch from 2001 to 2286: a number under a time's name outside it is
not a time (a duration, a count) and is shown as it is."""


def _mapping(properties: Any) -> dict[str, Any]:
    return properties if isinstance(properties, dict) else {}


def address(properties: Any) -> str:
    """The address the instance answers on, or ``""`` when its properties do not say."""
    props = _mapping(properties)
    for key in ADDRESS_KEYS:
        value = props.get(key)
        if isinstance(value, list):
            value = next((v for v in value if isinstance(v, str) and v), None)
        if isinstance(value, str) and value:
            return value
    return ""


def ports(properties: Any) -> str:
    """The ports it listens on (``http:8080,ssh:2222``, or ``8080,9090``), or ``""``."""
    value = _mapping(properties).get(PORTS_KEY)
    if isinstance(value, dict):
        return ",".join(f"{name}:{port}" for name, port in sorted(value.items()))
    if isinstance(value, list):
        return ",".join(str(port) for port in value)
    return ""


def pid(properties: Any) -> str:
    """Its process ID, or ``""``."""
    value = _mapping(properties).get(PID_KEY)
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else ""


def is_time(key: str, value: Any) -> bool:
    """Whether ``value`` under ``key`` is a time in seconds since the epoch."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    named = key in TIME_NAMES or key.endswith(TIME_SUFFIXES)
    return named and EPOCH_RANGE[0] <= value < EPOCH_RANGE[1]
