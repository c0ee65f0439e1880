"""What a commit says it would do: the reference's sentences, word for word, for every kind
of change it words (scripts compare them), then our own line for the tunables."""

from __future__ import annotations

from typing import Any

import pytest

from infrakit.plugins.group.report import changes
from infrakit.plugins.group.spec import GroupProperties
from infrakit.spi.properties import decode_properties


def props(size: int = 0, note: str = "v1", ids: list[str] | None = None,
          **extra: Any) -> GroupProperties:
    alloc: dict[str, Any] = {"LogicalIDs": ids} if ids else {"Size": size}
    return decode_properties({"Allocation": alloc,
                              "Instance": {"Plugin": "i", "Properties": {"Note": note}},
                              "Flavor": {"Plugin": "f"}, **extra}, GroupProperties)


@pytest.mark.parametrize(("old", "new", "undesired", "desired", "text"), [
    (props(5), props(5), 0, 5, "Noop"),
    (props(5), props(5, "v2"), 0, 0, "Adjusting the instance configuration, no restarts "
                                     "necessary"),
    (props(5), props(5, "v2"), 5, 0, "Performing a rolling update on 5 instances"),
    (props(5), props(10, "v2"), 5, 0, "Performing a rolling update on 5 instances, then "
                                      "adding 5 instances to increase the group size to 10"),
    (props(5), props(10), 0, 5, "Adding 5 instances to increase the group size to 10"),
    (props(5), props(3), 0, 5, "Terminating 2 instances to reduce the group size to 3"),
    (props(5), props(3, "v2"), 5, 0, "Terminating 2 instances to reduce the group size to 3, "
                                     "then performing a rolling update on 3 instances"),
    (props(ids=["a", "b"]), props(ids=["a", "b"]), 0, 2, "Noop"),
    (props(ids=["a", "b"]), props(ids=["b", "a"]), 0, 2,
     "Reordering the logical IDs, no member changes"),
    (props(ids=["a", "b"]), props(ids=["a", "b"], note="v2"), 2, 0,
     "Performing a rolling update on 2 instances"),
])
def test_the_reference_s_sentences(old: GroupProperties, new: GroupProperties,
                                   undesired: int, desired: int, text: str) -> None:
    assert changes(old, new, undesired, desired) == text


def test_our_tunables_are_said_in_place_of_noop() -> None:
    assert changes(props(5), props(5, HealthGrace=5, MaxSurge=2), 0, 5) == (
        "Changing MaxSurge from 1 to 2, HealthGrace from 60 to 5")


def test_our_tunables_come_on_a_line_of_their_own() -> None:
    assert changes(props(5), props(6, HealthGrace=5), 0, 5) == (
        "Adding 1 instances to increase the group size to 6\nChanging HealthGrace from 60 "
        "to 5")
