"""The tags (Docker: labels) a plugin keeps for itself on what it makes at a provider.

Ownership lives on the resource, not only in the plugin's files: a resource that lacks
``infrakit.plugin=<plugin name>`` is never described, labelled or destroyed, so a plugin
never touches another's, and a restarted one finds its own again. Every plugin that tags
at the provider reserves the same two keys and spells them the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from infrakit.spi.errors import PluginError
from infrakit.spi.types import Spec

OWNER = "infrakit.plugin"
"""The tag that marks a resource as made by the plugin named in its value."""
LOGICAL_ID = "infrakit.logical_id"
"""The tag that holds a resource's logical ID, when its spec gave one."""
RESERVED = frozenset({OWNER, LOGICAL_ID})


def from_spec(spec: Spec, check: Callable[[dict[str, str], str], None], kind: str,
              attach_with: str) -> dict[str, str]:
    """A spec's tags, checked by the plugin's own ``check``. A spec with attachments is
    refused: a plugin of kind ``kind`` attaches nothing itself, ``attach_with`` does."""
    tags = dict(spec.tags or {})
    check(tags, "Spec.Tags")
    if spec.attachments:
        raise PluginError(f"Spec.Attachments: the {kind} plugin attaches nothing; use "
                          f"{attach_with}")
    return tags


def refuse_reserved(key: str, where: str) -> None:
    """Refuse a tag key of a spec or a label that the plugin keeps for itself."""
    if key in RESERVED:
        raise PluginError(f"{where}: {key!r} is reserved for the plugin's own use")


def launch_tags(tags: dict[str, str], plugin: str, logical_id: str | None) -> dict[str, str]:
    """What a new resource is tagged with: the spec's tags, its owner, its logical ID."""
    own = {**tags, OWNER: plugin}
    if logical_id is not None:
        own[LOGICAL_ID] = logical_id
    return own


def without_reserved(tags: dict[str, str]) -> dict[str, str]:
    """A resource's tags as its description shows them: without the reserved ones."""
    return {k: v for k, v in tags.items() if k not in RESERVED}


def filter_literal(value: str) -> str:
    """An EC2 filter value that matches ``value`` literally (``*`` and ``?`` are wildcards)."""
    return re.sub(r"([\\*?])", r"\\\1", value)
