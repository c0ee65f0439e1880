"""The plugin SPI: wire types and the three plugin interfaces. Pure data, no I/O.

Names are loaded on first use (PEP 562), so that importing one submodule, as the CLI does,
does not import them all.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOME = {
    "PluginError": "errors", "NotFoundError": "errors",
    "FlavorPlugin": "flavor", "InstancePlugin": "instance",
    "GroupDescription": "group", "GroupPlugin": "group", "GroupSpec": "group",
    "FLAVOR_API": "types", "GROUP_API": "types", "INSTANCE_API": "types",
    "Allocation": "types", "Attachment": "types", "Description": "types", "Health": "types",
    "HealthReport": "types", "EndedInstance": "instance",
    "Index": "types", "InterfaceSpec": "types", "Spec": "types", "nonblocking": "methods",
    "Principal": "access", "Role": "access", "current_actor": "access",
}

__all__ = [
    "FLAVOR_API", "GROUP_API", "INSTANCE_API", "Allocation", "Attachment", "Description",
    "EndedInstance", "FlavorPlugin", "GroupDescription", "GroupPlugin", "GroupSpec", "Health",
    "HealthReport", "Index",
    "InstancePlugin", "InterfaceSpec", "NotFoundError", "PluginError", "Principal", "Role",
    "Spec", "current_actor", "nonblocking",
]

if TYPE_CHECKING:
    from infrakit.spi.access import Principal, Role, current_actor
    from infrakit.spi.errors import NotFoundError, PluginError
    from infrakit.spi.flavor import FlavorPlugin
    from infrakit.spi.group import GroupDescription, GroupPlugin, GroupSpec
    from infrakit.spi.instance import EndedInstance, InstancePlugin
    from infrakit.spi.methods import nonblocking
    from infrakit.spi.types import (
        FLAVOR_API,
        GROUP_API,
        INSTANCE_API,
        Allocation,
        Attachment,
        Description,
        Health,
        HealthReport,
        Index,
        InterfaceSpec,
        Spec,
    )


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'infrakit.spi' has no attribute {name!r}")
    return getattr(importlib.import_module(f"infrakit.spi.{module}"), name)
