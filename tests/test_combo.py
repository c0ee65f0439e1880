"""The combo flavor composing real flavor plugins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import FlavorClient
from infrakit.spi import Allocation, Attachment, Description, Health, Index, Spec
from infrakit.spi.errors import CallFailed
from tests.conftest import StartPlugin, StartScript
from tests.test_group_health import JUDGE

COMBO = {"Flavors": [
    {"Plugin": "vanilla-a", "Properties": {"Init": ["echo a"], "Tags": {"x": "a", "a": "1"},
                                           "Attachments": {"db": [{"ID": "vol-1"}]}}},
    {"Plugin": "vanilla-b", "Properties": {"Init": "echo b", "Tags": {"x": "b", "b": "2"}}},
]}


@pytest.fixture
def combo(home: Path, start_plugin: StartPlugin) -> Path:
    start_plugin("flavor-vanilla", "vanilla-a")
    start_plugin("flavor-vanilla", "vanilla-b")
    return start_plugin("flavor-combo").path


def test_prepare_merges_tags_concatenates_inits_and_appends_attachments(combo: Path) -> None:
    with RPCClient(combo) as conn:
        flavor = FlavorClient(conn)
        flavor.validate(COMBO, Allocation(logical_ids=["db"]))
        out = flavor.prepare(COMBO, Spec(init="echo base", tags={"g": "web"}, logical_id="db"),
                             Allocation(logical_ids=["db"]), Index(group="web", sequence=1))
    assert out.init == "echo base\necho a\necho b"
    assert out.tags == {"g": "web", "x": "b", "a": "1", "b": "2"}
    assert out.attachments == [Attachment(id="vol-1")]
    assert out.logical_id == "db"


def test_errors_name_the_flavor_that_failed(combo: Path) -> None:
    with RPCClient(combo) as conn:
        flavor = FlavorClient(conn)
        with pytest.raises(CallFailed) as err:
            flavor.validate({"Flavors": [{"Plugin": "vanilla-a", "Properties": {"Init": 3}}]},
                            Allocation(size=1))
        assert "vanilla-a" in err.value.reason and "Init" in err.value.reason
        with pytest.raises(CallFailed) as missing:
            flavor.validate({"Flavors": [{"Plugin": "nope"}]}, Allocation(size=1))
        assert "nope" in missing.value.reason
        with pytest.raises(CallFailed) as empty:
            flavor.validate({"Flavors": []}, Allocation(size=1))
        assert "Flavors" in empty.value.reason


def test_healthy_only_when_every_flavor_says_so(home: Path, combo: Path,
                                               start_script: StartScript) -> None:
    start_script(JUDGE, "flavor-judge")
    props = {"Flavors": [{"Plugin": "vanilla-a"}, {"Plugin": "flavor-judge"}]}
    member = Description(id="instance-1")
    with RPCClient(combo) as conn:
        flavor = FlavorClient(conn)
        (home / "verdicts.json").write_text("{}")
        assert flavor.healthy(props, member) is Health.HEALTHY
        (home / "verdicts.json").write_text(json.dumps({"instance-1": "unhealthy"}))
        assert flavor.healthy(props, member) is Health.UNHEALTHY
        flavor.drain(props, member)
    assert (home / "drained.log").read_text().split() == ["instance-1"]
