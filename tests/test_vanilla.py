"""The flavor-vanilla plugin, driven over its real socket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import FlavorClient
from infrakit.spi.calls import FlavorAPI
from infrakit.spi.errors import CallFailed
from infrakit.spi.types import Allocation, Attachment, Description, Health, Index, Spec
from tests.helpers import builtin_plugins, error_of, result_of


@pytest.fixture(scope="module")
def flavor_vanilla() -> Iterator[Path]:
    """One flavor-vanilla process for this module: the flavor keeps no state."""
    with builtin_plugins("flavor-vanilla") as paths:
        yield paths["flavor-vanilla"]


@pytest.fixture
def flavor(flavor_vanilla: Path) -> Iterator[FlavorAPI]:
    with RPCClient(flavor_vanilla, timeout=10) as rpc:
        yield FlavorClient(rpc)


def _prepare(flavor: FlavorAPI, props: Any, spec: Spec,
             alloc: Allocation | None = None) -> Spec:
    return flavor.prepare(props, spec, alloc or Allocation(size=1), Index(group="g", sequence=0))


def test_init_string(flavor: FlavorAPI) -> None:
    assert _prepare(flavor, {"Init": "echo a"}, Spec()).init == "echo a"


def test_init_list_is_joined_with_newlines(flavor: FlavorAPI) -> None:
    assert _prepare(flavor, {"Init": ["echo a", "echo b", "echo c"]}, Spec()).init == \
        "echo a\necho b\necho c"


@pytest.mark.parametrize(("init", "expected"), [
    ("echo flavor", "echo spec\necho flavor"),
    (["one", "two"], "echo spec\none\ntwo"),
], ids=["string", "list"])
def test_init_is_appended_after_spec_init(flavor: FlavorAPI, init: Any,
                                          expected: str) -> None:
    assert _prepare(flavor, {"Init": init}, Spec(init="echo spec")).init == expected


def test_no_flavor_init_keeps_spec_init(flavor: FlavorAPI) -> None:
    assert _prepare(flavor, {}, Spec(init="echo spec")).init == "echo spec"
    assert _prepare(flavor, None, Spec(init="")).init == ""


def test_tags_are_merged_flavor_tags_winning(flavor: FlavorAPI) -> None:
    out = _prepare(flavor, {"Tags": {"tier": "web", "project": "infrakit"}},
                   Spec(tags={"infrakit.group": "cattle", "tier": "old"}))
    assert out.tags == {"infrakit.group": "cattle", "tier": "web", "project": "infrakit"}


def test_tags_stay_null_when_nobody_sets_any(flavor: FlavorAPI, flavor_vanilla: Path) -> None:
    res = result_of(flavor_vanilla, "Flavor.Prepare", {
        "Type": "", "Properties": {"Init": "x"},
        "Spec": {"Properties": None, "Tags": None, "Init": "", "LogicalID": None,
                 "Attachments": None},
        "Allocation": {"Size": 1, "LogicalIDs": None}, "Index": {"Group": "", "Sequence": 0}})
    assert res["Spec"]["Tags"] is None
    assert res["Spec"]["Attachments"] is None
    assert res["Spec"]["LogicalID"] is None


def test_attachments_added_per_logical_id(flavor: FlavorAPI) -> None:
    props = {"Attachments": {"db-1": [{"ID": "vol-1", "Type": "ebs"}],
                             "db-2": [{"ID": "vol-2", "Type": "ebs"}]}}
    alloc = Allocation(logical_ids=["db-1", "db-2", "db-3"])
    one = _prepare(flavor, props, Spec(logical_id="db-1"), alloc)
    assert one.attachments == [Attachment(id="vol-1", type="ebs")]
    existing = _prepare(flavor, props,
                        Spec(logical_id="db-2", attachments=[Attachment(id="nic-2", type="eni")]),
                        alloc)
    assert existing.attachments == [Attachment(id="nic-2", type="eni"),
                                    Attachment(id="vol-2", type="ebs")]
    assert _prepare(flavor, props, Spec(logical_id="db-3"), alloc).attachments is None
    assert _prepare(flavor, props, Spec()).attachments is None


def test_prepare_keeps_properties_and_logical_id(flavor: FlavorAPI) -> None:
    spec = Spec(properties={"Note": "v1", "n": [1, 2]}, logical_id="db-1", init="a")
    out = _prepare(flavor, {"Init": ["b"]}, spec)
    assert out.properties == {"Note": "v1", "n": [1, 2]}
    assert out.logical_id == "db-1"


def test_prepare_of_reference_capture(flavor_vanilla: Path) -> None:
    """The exchange captured from the reference, answered identically."""
    props = {"Init": ["echo hello"], "Tags": {"tier": "web", "project": "infrakit"}}
    spec = {"Properties": {"Note": "Instance properties version 1.0"},
            "Tags": {"infrakit.config_sha": "6drwciyinzycumf3x2pkfcc6wzmg2wna",
                     "infrakit.group": "cattle"},
            "Init": "", "LogicalID": None, "Attachments": None}
    res = result_of(flavor_vanilla, "Flavor.Prepare", {
        "Type": "", "Properties": props, "Spec": spec,
        "Allocation": {"Size": 3, "LogicalIDs": None}, "Index": {"Group": "cattle",
                                                                 "Sequence": 0}})
    assert res == {"Type": "", "Spec": {
        "Properties": {"Note": "Instance properties version 1.0"},
        "Tags": {"infrakit.config_sha": "6drwciyinzycumf3x2pkfcc6wzmg2wna",
                 "infrakit.group": "cattle", "project": "infrakit", "tier": "web"},
        "Init": "echo hello", "LogicalID": None, "Attachments": None}}


def test_healthy_returns_1(flavor: FlavorAPI, flavor_vanilla: Path) -> None:
    inst = Description(id="instance-1", tags={"a": "b"})
    assert flavor.healthy({"Init": "x"}, inst) is Health.HEALTHY
    res = result_of(flavor_vanilla, "Flavor.Healthy", {
        "Type": "", "Properties": None,
        "Instance": {"ID": "instance-1", "LogicalID": None, "Tags": None}})
    assert res == {"Type": "", "Health": 1}


def test_drain_is_ok(flavor: FlavorAPI, flavor_vanilla: Path) -> None:
    flavor.drain({}, Description(id="instance-1"))
    res = result_of(flavor_vanilla, "Flavor.Drain", {
        "Type": "", "Properties": {}, "Instance": {"ID": "i", "LogicalID": None, "Tags": {}}})
    assert res == {"Type": "", "OK": True}


@pytest.mark.parametrize("props", [
    None, {}, {"Init": "echo"}, {"Init": []}, {"Init": ["a", "b"], "Tags": {"k": "v"}},
    {"Attachments": {"db-1": [{"ID": "vol-1", "Type": "ebs"}]}},
])
def test_validate_accepts_good_properties(flavor: FlavorAPI, props: Any) -> None:
    flavor.validate(props, Allocation(size=2))


@pytest.mark.parametrize(("props", "named"), [
    ({"Init": 3}, "Properties.Init"),
    ({"Init": ["ok", 3]}, "Properties.Init"),
    ({"Tags": {"a": 1}}, "Properties.Tags"),
    ({"Tags": ["a"]}, "Properties.Tags"),
    ({"Attachments": {"db-1": [{"Type": "ebs"}]}}, "ID"),
    ({"Bogus": 1}, "Bogus"),
    ({"Init": "x", "init2": 1}, "init2"),
    ("not an object", "Properties"),
])
def test_validate_rejects_bad_properties_naming_field(flavor: FlavorAPI, props: Any,
                                                      named: str) -> None:
    with pytest.raises(CallFailed) as info:
        flavor.validate(props, Allocation(size=1))
    assert info.value.code == -32000
    assert named in info.value.reason


def test_prepare_rejects_bad_properties_too(flavor_vanilla: Path) -> None:
    err = error_of(flavor_vanilla, "Flavor.Prepare", {"Properties": {"Init": 3}, "Spec": {}})
    assert err["code"] == -32000
    assert "Properties.Init" in err["message"]
    assert err["data"] is None
