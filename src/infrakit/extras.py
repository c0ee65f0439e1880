"""The optional parts of infrakit-py: which pip extra brings the libraries of each.

A plain ``pip install infrakit-py`` holds what local use needs (the file and process
instance plugins, the flavors, the group controller, the manager on SQLite, the CLI). The
provider SDKs are large (botocore alone is over 30 MB), so they come as extras, and a plugin
kind or a store whose libraries are missing is refused with the one line that installs them,
before anything starts.
"""

from __future__ import annotations

import importlib.util

from infrakit.spi.errors import PluginError

PROJECT = "infrakit-py"
"""The distribution's name in pyproject.toml, as ``pip install`` takes it."""

EXTRAS: dict[str, tuple[str, ...]] = {
    "aws": ("boto3", "botocore"),
    "cloud": ("libcloud",),
    "docker": ("docker",),
    "etcd": ("etcd3gw",),
    "qemu": ("qemu.qmp", "pycdlib"),
    "redfish": ("sushy",),
}
"""Each extra of pyproject.toml, and the modules it brings that the code imports."""


class MissingExtra(PluginError):
    """A part of infrakit-py was asked for whose libraries are not installed."""


def pip_line(extra: str) -> str:
    """The command that installs ``extra``, quoted for a shell."""
    return f"pip install '{PROJECT}[{extra}]'"


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here (found without importing
    them, which for the SDKs would cost a second)."""
    return [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtra`, saying how to install it, unless every library of
    ``extra`` is installed; ``what`` is the part that needs it, as the user named it."""
    missing = missing_modules(extra)
    if missing:
        raise MissingExtra(f"{what} needs {', '.join(missing)}, which the [{extra}] extra "
                           f"installs: {pip_line(extra)}")
