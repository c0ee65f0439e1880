"""The plugin SPI: wire types and the three plugin interfaces. Pure data, no I/O."""

from infrakit.spi.errors import NotFoundError, PluginError
from infrakit.spi.flavor import FlavorPlugin
from infrakit.spi.group import GroupDescription, GroupPlugin, GroupSpec
from infrakit.spi.instance import InstancePlugin
from infrakit.spi.types import (
    FLAVOR_API,
    GROUP_API,
    INSTANCE_API,
    Allocation,
    Attachment,
    Description,
    Health,
    Index,
    InterfaceSpec,
    Spec,
)

__all__ = [
    "FLAVOR_API",
    "GROUP_API",
    "INSTANCE_API",
    "Allocation",
    "Attachment",
    "Description",
    "FlavorPlugin",
    "GroupDescription",
    "GroupPlugin",
    "GroupSpec",
    "Health",
    "Index",
    "InstancePlugin",
    "InterfaceSpec",
    "NotFoundError",
    "PluginError",
    "Spec",
]
