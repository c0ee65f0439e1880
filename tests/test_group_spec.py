"""Our additions to the group spec are checked, each with a message that names the field;
numbers too large to mean anything are refused, not planned."""

from __future__ import annotations

from typing import Any

import pytest

from infrakit.plugins.group.spec import parse_group
from infrakit.spi.errors import PluginError
from infrakit.spi.group import GroupSpec

BASE: dict[str, Any] = {"Allocation": {"Size": 3},
                        "Instance": {"Plugin": "instance-file"},
                        "Flavor": {"Plugin": "flavor-vanilla"}}


@pytest.mark.parametrize(("extra", "message"), [
    ({"Allocation": {"Size": 2 ** 70}}, "Properties.Allocation: at most 100000 members"),
    ({"Allocation": {"LogicalIDs": [str(i) for i in range(100_001)]}},
     "Properties.Allocation: at most 100000 members"),
    ({"Allocation": {"Size": -1}}, "Properties.Allocation.Size: must not be negative"),
    ({"Allocation": {"LogicalIDs": ["a", "a"]}}, "LogicalIDs: must not repeat an ID"),
    ({"MaxParallel": 0}, "Properties.MaxParallel: must be from 1 to 10000"),
    ({"MaxParallel": 2 ** 62}, "Properties.MaxParallel: must be from 1 to 10000"),
    ({"MaxSurge": 10 ** 9}, "Properties.MaxSurge and MaxUnavailable: at most 100000"),
    ({"MaxSurge": 0, "MaxUnavailable": 0}, "may not both be 0"),
    ({"ProvisionDeadline": 1e308}, "Properties.ProvisionDeadline: at most 2592000 seconds"),
    ({"ProvisionDeadline": 0}, "Properties.ProvisionDeadline: must be a positive number"),
    ({"HealthGrace": 1e12}, "Properties.HealthGrace: at most 2592000 seconds"),
    ({"UpdatePause": -1}, "Properties.UpdatePause: must not be negative"),
    ({"MaxUnhealthy": "lots"}, "Properties.MaxUnhealthy: 'lots' is neither a count"),
    ({"Instance": {"Plugin": ""}}, "Properties.Instance.Plugin: must name a plugin"),
])
def test_bad_values_are_refused_with_the_field_named(extra: dict[str, Any],
                                                      message: str) -> None:
    with pytest.raises(PluginError) as refused:
        parse_group(GroupSpec(id="g", properties={**BASE, **extra}))
    assert message in str(refused.value)


def test_the_largest_values_allowed_are_accepted() -> None:
    props = parse_group(GroupSpec(id="g", properties={
        **BASE, "Allocation": {"Size": 100_000}, "MaxParallel": 10_000,
        "ProvisionDeadline": 30 * 24 * 3600}))
    assert props.target() == 100_000 and props.max_parallel == 10_000


@pytest.mark.parametrize("gid", ["web\x1b]0;pwned\x07", "web\nfake-row", "web\r", "a\tb",
                                 "web\x00", "web\x7f", "web\x9b2J"])
def test_a_group_id_with_control_characters_is_refused(gid: str) -> None:
    """Every listing prints the ID: a terminal would act on it, a new line would fake a
    row."""
    with pytest.raises(PluginError) as refused:
        parse_group(GroupSpec(id=gid, properties=BASE))
    assert str(refused.value) == f"ID: {gid!r} must not contain control characters"


def test_a_logical_id_with_control_characters_is_refused() -> None:
    with pytest.raises(PluginError) as refused:
        parse_group(GroupSpec(id="g", properties={**BASE, "Allocation": {
            "LogicalIDs": ["db-1", "db\x1b[2J"]}}))
    assert str(refused.value) == ("Properties.Allocation.LogicalIDs: 'db\\x1b[2J' must not "
                                  "contain control characters")


def test_ids_in_any_script_with_spaces_and_punctuation_are_accepted() -> None:
    for gid in ("web", "Web Servers (eu-1)", "сервер", "ウェブ", "w/e:b.1"):
        assert parse_group(GroupSpec(id=gid, properties=BASE)).target() == 3
