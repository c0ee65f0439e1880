"""The instance-file plugin, driven through the typed client over its real socket."""

from __future__ import annotations

import json
import re
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infrakit.rpc.client import RPCClient
from infrakit.rpc.typed import InstanceClient
from infrakit.spi.errors import CallFailed
from infrakit.spi.types import Attachment, Spec
from tests.conftest import Plugin, StartPlugin
from tests.helpers import result_of, stop_process

NAME = "instance-file"


def _num(iid: str) -> int:
    match = re.fullmatch(r"instance-([0-9]+)", iid)
    assert match, f"unexpected instance ID {iid!r}"
    return int(match.group(1))


class Running:
    """A running instance-file plugin and a typed client of it; can be restarted."""

    def __init__(self, start_plugin: StartPlugin, home: Path) -> None:
        self._start = start_plugin
        self.home = home
        self.plugin: Plugin = start_plugin(NAME)
        self.rpc = RPCClient(self.plugin.path, timeout=10)
        self.client = InstanceClient(self.rpc)

    @property
    def data_dir(self) -> Path:
        return self.home / "instance-file" / NAME

    def restart(self) -> None:
        self.rpc.close()
        assert stop_process(self.plugin.proc) == 0
        self.plugin = self._start(NAME)
        self.rpc = RPCClient(self.plugin.path, timeout=10)
        self.client = InstanceClient(self.rpc)

    def close(self) -> None:
        self.rpc.close()


@pytest.fixture
def running(start_plugin: StartPlugin, home: Path) -> Iterator[Running]:
    r = Running(start_plugin, home)
    try:
        yield r
    finally:
        r.close()


def _ids(r: Running, tags: dict[str, str] | None = None) -> list[str]:
    return [d.id for d in r.client.describe_instances(tags or {}, False)]


def test_provision_returns_unique_ids(running: Running) -> None:
    ids = [running.client.provision(Spec(tags={"n": str(i)})) for i in range(15)]
    assert len(set(ids)) == 15
    assert sorted(_ids(running)) == sorted(ids)


def test_concurrent_provisions_get_unique_ids(running: Running) -> None:
    got: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with RPCClient(running.plugin.path, timeout=10) as rpc:
                client = InstanceClient(rpc)
                mine = [client.provision(Spec()) for _ in range(8)]
            with lock:
                got.extend(mine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(got) == 40
    assert len(set(got)) == 40
    assert sorted(_ids(running)) == sorted(got)


def test_ids_never_reused_after_destroy_and_restart(running: Running) -> None:
    ids = [running.client.provision(Spec()) for _ in range(3)]
    highest = max(ids, key=_num)
    running.client.destroy(highest)
    running.restart()
    new = running.client.provision(Spec())
    assert new not in ids
    assert _num(new) > _num(highest)


def test_ids_never_reused_after_destroying_everything_and_restart(running: Running) -> None:
    ids = [running.client.provision(Spec()) for _ in range(2)]
    for iid in ids:
        running.client.destroy(iid)
    running.restart()
    new = running.client.provision(Spec())
    assert _num(new) > max(_num(i) for i in ids)


def test_describe_matches_all_given_tags(running: Running) -> None:
    web_prod = running.client.provision(Spec(tags={"tier": "web", "env": "prod"}))
    web_dev = running.client.provision(Spec(tags={"tier": "web", "env": "dev"}))
    db_prod = running.client.provision(Spec(tags={"tier": "db", "env": "prod", "x": "1"}))
    untagged = running.client.provision(Spec())
    assert _ids(running, {"tier": "web"}) == [web_prod, web_dev]
    assert _ids(running, {"env": "prod"}) == [web_prod, db_prod]
    assert _ids(running, {"tier": "web", "env": "prod"}) == [web_prod]
    assert _ids(running, {"tier": "db", "env": "dev"}) == []
    assert _ids(running, {"tier": "web", "missing": "tag"}) == []
    assert _ids(running, {"env": "prod "}) == []
    assert _ids(running) == [web_prod, web_dev, db_prod, untagged]


def test_describe_orders_by_numeric_id(running: Running) -> None:
    ids = [running.client.provision(Spec()) for _ in range(11)]
    assert _ids(running) == sorted(ids, key=_num)


def test_properties_returned_only_when_asked(running: Running) -> None:
    with_props = running.client.provision(Spec(properties={"size": "large", "n": [1, 2]}))
    without = running.client.provision(Spec())
    sock = running.plugin.path
    plain = result_of(sock, "Instance.DescribeInstances", {"Type": "", "Tags": {},
                                                           "Properties": False})
    assert [d["ID"] for d in plain["Descriptions"]] == [with_props, without]
    for d in plain["Descriptions"]:
        assert "Properties" not in d
        assert set(d) == {"ID", "LogicalID", "Tags"}
    full = result_of(sock, "Instance.DescribeInstances", {"Type": "", "Tags": {},
                                                          "Properties": True})
    by_id = {d["ID"]: d for d in full["Descriptions"]}
    # as the reference's file plugin: the whole spec the instance was provisioned with
    assert by_id[with_props]["Properties"] == {
        "Properties": {"size": "large", "n": [1, 2]}, "Tags": None, "Init": "",
        "LogicalID": None, "Attachments": None}
    assert by_id[without]["Properties"]["Properties"] is None


def test_label_merges_into_tags(running: Running) -> None:
    iid = running.client.provision(Spec(tags={"a": "1", "b": "2"}, logical_id="db-0"))
    other = running.client.provision(Spec(tags={"a": "1"}))
    running.client.label(iid, {"b": "3", "c": "4"})
    descs = {d.id: d for d in running.client.describe_instances({}, False)}
    assert descs[iid].tags == {"a": "1", "b": "3", "c": "4"}
    assert descs[iid].logical_id == "db-0"
    assert descs[other].tags == {"a": "1"}
    running.client.label(iid, {})
    assert _ids(running, {"b": "3", "c": "4"}) == [iid]


def test_describe_by_tag_follows_labels_destroys_and_restarts(running: Running) -> None:
    """Describes by tag read an index of the tags: it must follow every change."""
    a = running.client.provision(Spec(tags={"infrakit.group": "one"}))
    b = running.client.provision(Spec(tags={"infrakit.group": "two"}))
    c = running.client.provision(Spec(tags={"infrakit.group": "one"}))
    running.client.label(b, {"infrakit.group": "one"})
    assert _ids(running, {"infrakit.group": "one"}) == [a, b, c]
    assert _ids(running, {"infrakit.group": "two"}) == []
    running.client.destroy(a)
    assert _ids(running, {"infrakit.group": "one"}) == [b, c]
    running.restart()
    assert _ids(running, {"infrakit.group": "one"}) == [b, c]
    (running.data_dir / f"{c}.json").unlink()  # removed by hand
    assert _ids(running, {"infrakit.group": "one"}) == [b]


def test_label_of_unknown_instance_is_error(running: Running) -> None:
    with pytest.raises(CallFailed) as info:
        running.client.label("instance-999", {"a": "b"})
    assert info.value.code == -32000
    assert "instance-999" in info.value.reason


def test_state_survives_restart(running: Running) -> None:
    spec = Spec(properties={"k": "v"}, tags={"t": "1"}, init="echo hi", logical_id="lid-1",
                attachments=[Attachment(id="vol-1", type="ebs")])
    first = running.client.provision(spec)
    second = running.client.provision(Spec(tags={"t": "2"}))
    running.client.label(second, {"labelled": "yes"})
    gone = running.client.provision(Spec())
    running.client.destroy(gone)
    before = running.client.describe_instances({}, True)

    running.restart()
    after = running.client.describe_instances({}, True)
    assert after == before
    assert [d.id for d in after] == [first, second]
    assert after[0].properties == {"Properties": {"k": "v"}, "Tags": {"t": "1"},
                                   "Init": "echo hi", "LogicalID": "lid-1",
                                   "Attachments": [{"ID": "vol-1", "Type": "ebs"}]}
    assert after[0].logical_id == "lid-1"
    assert after[1].tags == {"t": "2", "labelled": "yes"}


def test_destroy_removes_instance(running: Running) -> None:
    keep = running.client.provision(Spec())
    drop = running.client.provision(Spec())
    running.client.destroy(drop)
    assert _ids(running) == [keep]
    assert not (running.data_dir / f"{drop}.json").exists()


def _gone_for_label(running: Running, iid: str) -> str:
    with pytest.raises(CallFailed) as info:
        running.client.label(iid, {"a": "b"})
    assert info.value.code == -32000
    return info.value.reason


def test_destroy_of_an_instance_already_destroyed_succeeds(running: Running) -> None:
    keep = running.client.provision(Spec())
    drop = running.client.provision(Spec())
    running.client.destroy(drop)
    running.client.destroy(drop)  # a retried destroy
    assert _ids(running) == [keep]
    assert f"{drop} was already gone" in running.plugin.output()
    reason = _gone_for_label(running, drop)
    assert repr(drop) in reason and "gone" in reason and "cannot label" in reason


def test_destroy_of_an_instance_whose_file_was_removed_by_hand_succeeds(
        running: Running) -> None:
    seen, unseen, keep = (running.client.provision(Spec(tags={"t": "x"})) for _ in range(3))
    (running.data_dir / f"{seen}.json").unlink()
    assert _ids(running) == [unseen, keep]  # the plugin has noticed this one ...
    (running.data_dir / f"{unseen}.json").unlink()  # ... and not yet this one
    reason = _gone_for_label(running, unseen)  # a label must not bring its file back
    assert repr(unseen) in reason and "gone" in reason
    assert not (running.data_dir / f"{unseen}.json").exists()
    for iid in (seen, unseen):
        running.client.destroy(iid)
        assert f"{iid} was already gone" in running.plugin.output()
    assert _ids(running) == [keep]
    # destroyed through the plugin: the group that destroyed them learns nothing more
    assert running.client.describe_ended({}) == []
    running.client.destroy(keep)
    assert _ids(running) == []


def test_destroy_of_unknown_id_is_error(running: Running) -> None:
    running.client.provision(Spec())
    for bad in ("instance-404", "nope", "", "instance-"):
        with pytest.raises(CallFailed) as info:
            running.client.destroy(bad)
        assert info.value.code == -32000
        assert repr(bad) in info.value.reason
    assert len(_ids(running)) == 1


def test_path_traversal_ids_are_refused_and_delete_nothing(running: Running,
                                                           home: Path) -> None:
    inside = running.client.provision(Spec(tags={"keep": "me"}))
    data_dir = running.data_dir
    canaries = {
        home / "canary.json": "../../canary",
        data_dir.parent / "canary.json": "../canary",
        home / "abs-canary.json": str(home / "abs-canary"),
        home / "deep-canary.json": f"{inside}/../../../deep-canary",
    }
    for path in canaries:
        path.write_text('{"canary": true}')
    attempts = [*canaries.values(), f"../{NAME}/{inside}", f"./{inside}", f"{inside}/../{inside}",
                "../../etc/passwd", "/etc/passwd", f"{inside}\x00"]
    for bad in attempts:
        with pytest.raises(CallFailed) as info:
            running.client.destroy(bad)
        assert info.value.code == -32000, bad
        with pytest.raises(CallFailed):
            running.client.label(bad, {"pwned": "yes"})
    for path in canaries:
        assert path.read_text() == '{"canary": true}', f"{path} was touched"
    assert Path("/etc/passwd").exists()
    descs = running.client.describe_instances({}, False)
    assert [(d.id, d.tags) for d in descs] == [(inside, {"keep": "me"})]


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_instance_files_are_valid_json_and_no_temp_files_remain(running: Running) -> None:
    specs = [Spec(tags={"i": str(i)}, init=f"echo {i}", properties={"i": i}) for i in range(4)]
    ids = [running.client.provision(s) for s in specs]
    running.client.label(ids[0], {"x": "y"})
    running.client.destroy(ids[1])
    names = _files(running.data_dir)
    assert names == sorted([".next-id", *(f"{i}.json" for i in (ids[0], ids[2], ids[3]))])
    for iid, spec in zip(ids, specs, strict=True):
        path = running.data_dir / f"{iid}.json"
        if iid == ids[1]:
            continue
        record: dict[str, Any] = json.loads(path.read_text())
        assert record["ID"] == iid
        assert record["Init"] == spec.init
        assert record["Properties"] == spec.properties
        expected_tags = {**(spec.tags or {}), **({"x": "y"} if iid == ids[0] else {})}
        assert record["Tags"] == expected_tags


def test_instance_directory_and_files_are_private(running: Running) -> None:
    iid = running.client.provision(Spec(properties={"secret": "s3cr3t"}))
    assert stat.S_IMODE(running.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((running.data_dir / f"{iid}.json").stat().st_mode) == 0o600


def test_a_file_written_there_that_is_no_record_is_named_once_and_left(
        running: Running) -> None:
    """A file in the directory under a record's name that does not decode (written by
    hand, or still being written) is not taken in, and the log says so once, not at
    every describe."""
    kept = running.client.provision(Spec(tags={"k": "v"}))
    bad = running.data_dir / "instance-50.json"
    bad.write_text('{"ID": "instance-5')
    assert _ids(running) == [kept]
    (running.data_dir / "unrelated").write_text("x")  # the directory changes again
    assert _ids(running) == [kept]
    assert running.plugin.output().count(str(bad)) == 1
    assert bad.read_text() == '{"ID": "instance-5'


def test_validate_accepts_any_properties(running: Running) -> None:
    for props in (None, {}, {"a": [1, {"b": None}]}, "text", 3):
        running.client.validate(props)
