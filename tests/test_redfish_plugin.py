"""The instance-redfish plugin against the sushy-tools Redfish emulator (``tests/redfish_engine``),
each test with its own emulator: its own free loopback port, state directory and pool of
systems of different sizes, and a loopback server of boot images that the emulator really
downloads on InsertMedia. The plugin object is driven in this process here; the group
tests (``test_redfish_group.py``) run it as its own process."""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infrakit.spi import Spec
from infrakit.spi.errors import NotFoundError, PluginError
from tests.helpers import require_engine, stop_process, wait_until
from tests.moto_engine import free_port
from tests.redfish_engine import (
    PASSWORD,
    USER,
    Emulator,
    Images,
    emulator,
    image_server,
    redfish_problem,
    system,
)

POOL = [system("small", 4, 16), system("mid", 16, 64, model="PowerEdge R650"),
        system("big", 64, 512, model="PowerEdge R750", sku="R750-XL")]


@pytest.fixture
def bmc() -> Iterator[Emulator]:
    require_engine(redfish_problem())
    with emulator(POOL) as running:
        yield running


@pytest.fixture(scope="module")
def images() -> Iterator[Images]:
    with image_server() as served:
        yield served


def write_pool(home: Path, bmcs: list[dict[str, Any]], mode: int = 0o600,
               **extra: Any) -> Path:
    path = home / "pool.yml"
    path.write_text(json.dumps({"BMCs": bmcs, **extra}))
    os.chmod(path, mode)
    return path


def entry(url: str, name: str = "r1", password: str = PASSWORD) -> dict[str, Any]:
    return {"Name": name, "URL": url, "Username": USER, "Password": password}


def make_plugin(home: Path, monkeypatch: pytest.MonkeyPatch, bmcs: list[dict[str, Any]],
                **extra: Any) -> Any:
    from infrakit.plugins.instance.redfish import RedfishInstancePlugin

    monkeypatch.setenv("INFRAKIT_REDFISH_POOL", str(write_pool(home, bmcs, **extra)))
    return RedfishInstancePlugin("instance-redfish", home / "state", power_timeout=30)


@pytest.fixture
def plugin(bmc: Emulator, home: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    return make_plugin(home, monkeypatch, [entry(bmc.url)],
                       UserData={"Directory": str(home / "user-data")},
                       ServerTemplates={"large": {"MinCPUs": 32, "Model": "PowerEdge*"}})


def claims(home: Path) -> dict[str, Any]:
    path = home / "state" / "state.json"
    return dict(json.loads(path.read_text())["Claims"]) if path.exists() else {}


def test_provision_takes_the_smallest_fitting_system_and_boots_its_image(
        plugin: Any, bmc: Emulator, images: Images, home: Path) -> None:
    image = images.url("base.iso")
    iid = plugin.provision(Spec(properties={"MinCPUs": 8, "BootImage": image},
                                tags={"tier": "db"}, init="#cloud-config\n"))
    assert iid == "r1-1"
    assert bmc.power("mid") == "On"
    assert bmc.media("mid") == image
    assert bmc.get(f"/redfish/v1/Systems/{bmc.uuid('mid')}")["Boot"][
        "BootSourceOverrideTarget"] == "Cd"
    assert "/base.iso" in images.served  # the BMC really fetched it
    published = home / "user-data" / bmc.uuid("mid")
    assert (published / "user-data").read_text() == "#cloud-config\n"
    assert "instance-id: r1-1" in (published / "meta-data").read_text()
    [desc] = plugin.describe_instances({"tier": "db"}, True)
    assert desc.properties["PowerState"] == "On" and desc.properties["Health"] == "OK"
    assert (desc.properties["BMC"], desc.properties["Name"]) == ("r1", "mid")
    assert desc.properties["System"] == bmc.uuid("mid")
    assert plugin.describe_instances({"tier": "web"}, False) == []
    for path in (home / "state").iterdir():  # credentials are never written
        assert PASSWORD not in path.read_text(errors="replace"), path


def test_no_free_system_is_an_error_that_counts_why(plugin: Any) -> None:
    spec = Spec(properties={"MinCPUs": 16})
    assert {plugin.provision(spec), plugin.provision(spec)} == {"r1-1", "r1-2"}
    with pytest.raises(PluginError) as caught:
        plugin.provision(spec)
    assert str(caught.value) == "no free system matching MinCPUs ≥ 16: 2 claimed, 1 too small"


def test_templates_and_patterns_choose_the_system(plugin: Any, bmc: Emulator) -> None:
    iid = plugin.provision(Spec(properties={"ServerTemplate": "large"}))
    [desc] = plugin.describe_instances({}, True)
    assert (desc.id, desc.properties["Name"]) == (iid, "big")
    with pytest.raises(PluginError, match=r"Model ~ Cisco\*: 2 of another model, 1 claimed"):
        plugin.provision(Spec(properties={"Model": "Cisco*"}))
    with pytest.raises(PluginError, match=r"SKU ~ R750-\*: 2 of another SKU, 1 claimed"):
        plugin.provision(Spec(properties={"SKU": "R750-*"}))
    with pytest.raises(PluginError, match=r"Properties.ServerTemplate: 'huge' is not a "
                                          r"template of the pool \(its ServerTemplates: "
                                          r"large\)"):
        plugin.validate({"ServerTemplate": "huge"})


def test_concurrent_provisions_never_share_a_system_and_claims_survive_a_restart(
        plugin: Any, bmc: Emulator, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results: list[Any] = []

    def one() -> None:
        try:
            results.append(plugin.provision(Spec(properties={"Boot": "Pxe"})))
        except PluginError as exc:
            results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    made = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, PluginError)]
    assert len(made) == 3 and len(refused) == 1, results
    assert "3 claimed" in str(refused[0])
    assert len({c["Path"] for c in claims(home).values()}) == 3
    assert all(bmc.power(n) == "On" for n in ("small", "mid", "big"))
    assert {bmc.get(f"/redfish/v1/Systems/{bmc.uuid(n)}")["Boot"]["BootSourceOverrideTarget"]
            for n in ("small", "mid", "big")} == {"Pxe"}
    again = make_plugin(home, monkeypatch, [entry(bmc.url)])  # as after a crash
    assert sorted(d.id for d in again.describe_instances({}, False)) == sorted(made)
    with pytest.raises(PluginError, match="3 claimed"):
        again.provision(Spec(properties={}))


def test_destroy_shuts_down_ejects_and_frees_the_system(
        plugin: Any, bmc: Emulator, images: Images, home: Path) -> None:
    iid = plugin.provision(Spec(properties={"MinCPUs": 32, "BootImage": images.url("a.iso"),
                                            "StopGrace": 0}, init="echo hi"))
    plugin.destroy(iid)
    assert bmc.power("big") == "Off" and bmc.media("big") is None
    assert claims(home) == {} and not (home / "user-data" / bmc.uuid("big")).exists()
    assert plugin.describe_instances({}, False) == []
    plugin.destroy(iid)  # destroyed already: nothing to do
    again = plugin.provision(Spec(properties={"MinCPUs": 32}))
    assert again == "r1-2"  # the same system, under a new ID
    [desc] = plugin.describe_instances({}, True)
    assert desc.properties["Name"] == "big"
    for doing in (plugin.destroy, lambda i: plugin.label(i, {"a": "b"})):
        with pytest.raises(NotFoundError, match="not an instance of plugin"):
            doing("r1-99")
    with pytest.raises(NotFoundError, match="is gone"):
        plugin.label(iid, {"a": "b"})


def test_labels_are_kept_in_the_state(plugin: Any) -> None:
    iid = plugin.provision(Spec(properties={}, tags={"a": "1"}))
    plugin.label(iid, {"b": "2"})
    [desc] = plugin.describe_instances({"b": "2"}, False)
    assert desc.tags == {"a": "1", "b": "2"}


def test_a_system_powered_off_behind_the_plugins_back_ends_and_stays_out_of_the_pool(
        plugin: Any, bmc: Emulator) -> None:
    iid = plugin.provision(Spec(properties={"MinCPUs": 32}, tags={"g": "x"}))
    bmc.reset("big", "ForceOff")
    wait_until(lambda: plugin.describe_instances({}, False) == [], 30, interval=0.1,
               what="the instance to end")
    [ended] = plugin.describe_ended({"g": "x"})
    assert ended.id == iid and not ended.crashed
    assert "powered off outside the plugin" in ended.reason
    with pytest.raises(PluginError, match=re.escape(
            "MinCPUs ≥ 32: 2 too small, 1 ended outside the plugin (destroy its instance to "
            "free it)")):
        plugin.provision(Spec(properties={"MinCPUs": 32}))
    plugin.destroy(iid)
    assert plugin.describe_ended({}) == []
    assert plugin.provision(Spec(properties={"MinCPUs": 32})) == "r1-2"


def test_a_wrong_password_names_the_bmc_and_claims_nothing(
        bmc: Emulator, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = make_plugin(home, monkeypatch, [entry(bmc.url, password="wrong")])
    with pytest.raises(PluginError) as caught:
        plugin.provision(Spec(properties={}))
    assert "BMC 'r1'" in str(caught.value)
    assert "refused the credentials (HTTP 401)" in str(caught.value)
    assert "wrong" not in str(caught.value) and bmc.url not in str(caught.value)
    assert claims(home) == {}


def test_an_unreachable_bmc_is_named_and_others_still_serve(
        bmc: Emulator, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    plugin = make_plugin(home, monkeypatch, [entry(down, "r0"), entry(bmc.url)])
    assert plugin.provision(Spec(properties={"MinCPUs": 64})) == "r1-1"
    with pytest.raises(PluginError) as caught:
        plugin.provision(Spec(properties={"MinCPUs": 64}))
    assert "BMC 'r0': listing its systems: it cannot be reached (connection refused)" \
        in str(caught.value)
    assert "1 claimed" in str(caught.value)


def test_a_failed_start_rolls_the_claim_back(plugin: Any, bmc: Emulator, images: Images,
                                            home: Path) -> None:
    missing = f"{images.base}/no-such.iso"
    with pytest.raises(PluginError, match=r"BMC 'r1': starting system \S+: it answered "
                                          "HTTP 400"):
        plugin.provision(Spec(properties={"MinCPUs": 32, "BootImage": missing},
                              init="echo hi"))
    assert claims(home) == {}
    assert bmc.power("big") == "Off" and bmc.media("big") is None
    assert not (home / "user-data" / bmc.uuid("big")).exists()
    assert plugin.provision(Spec(properties={"MinCPUs": 32})) == "r1-2"


def test_a_bmc_without_virtual_media_is_refused_at_validate(
        home: Path, monkeypatch: pytest.MonkeyPatch, images: Images) -> None:
    require_engine(redfish_problem())
    with emulator(POOL, feature_set="minimum", expand=False) as bare:
        plugin = make_plugin(home, monkeypatch, [entry(bare.url, "old")])
        with pytest.raises(PluginError, match=re.escape(
                "Properties.BootImage: BMC 'old' does not support virtual media")):
            plugin.validate({"BootImage": images.url("a.iso")})
        plugin.validate({"Boot": "Pxe"})
        with pytest.raises(PluginError, match=r"MinCPUs ≥ 8: 3 not telling their size$"):
            plugin.provision(Spec(properties={"MinCPUs": 8}))
        iid = plugin.provision(Spec(properties={"Boot": "Pxe"}))
        bare.zero()
        [desc] = plugin.describe_instances({}, True)
        assert desc.id == iid and desc.properties["PowerState"] == "On"
        assert desc.properties["Health"] == "Unknown"  # this feature set has no Status
        assert bare.counts() == {"GET Systems/*": 1}  # no $expand: one read per member


@pytest.mark.parametrize(("properties", "error"), [
    ({"BootImage": "ftp://images/a.iso"}, "Properties.BootImage: 'ftp://images/a.iso' is "
                                          "not an http:// or https:// URL"),
    ({"BootImage": "/srv/a.iso"}, "Properties.BootImage: '/srv/a.iso' is not an http://"),
    ({"BootImage": "http://x/a.iso", "Boot": "Pxe"}, "Properties.Boot: 'Pxe' cannot go "
                                                     "with a BootImage"),
    ({"Boot": "Cd"}, "Properties.Boot: 'Cd' needs a BootImage"),
    ({"Boot": "Usb"}, "Properties.Boot: invalid enum value 'Usb'"),
    ({"MinCPUs": -1}, "Properties.MinCPUs: -1 must not be negative"),
    ({"MinCPU": 4}, "Properties.MinCPU: unknown field; did you mean MinCPUs?"),
])
def test_bad_properties_are_refused(plugin: Any, properties: dict[str, Any],
                                    error: str) -> None:
    with pytest.raises(PluginError, match=re.escape(error)):
        plugin.validate(properties)


def test_init_without_a_user_data_directory_is_refused(
        bmc: Emulator, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = make_plugin(home, monkeypatch, [entry(bmc.url)])
    with pytest.raises(PluginError, match=re.escape(
            "Spec.Init: the pool file gives no UserData.Directory")):
        plugin.provision(Spec(properties={}, init="echo hi"))
    assert claims(home) == {}


@pytest.mark.parametrize(("pool", "mode", "error"), [
    ({"BMCs": [{"Name": "r1", "URL": "http://127.0.0.1:1"}]}, 0o644,
     "may be read or written by others (mode 644); it holds passwords: chmod 600"),
    ({"BMCs": []}, 0o600, "BMCs: the list is empty"),
    ({"BMCs": [{"Name": "a b", "URL": "http://x"}]}, 0o600, "BMCs[0].Name: 'a b' must"),
    ({"BMCs": [{"Name": "r1", "URL": "ftp://x"}]}, 0o600, "BMCs[0].URL: must be an http"),
    ({"BMCs": [{"Name": "r1", "Url": "http://x"}]}, 0o600,
     "BMCs[0].Url: unknown field; did you mean URL?"),
])
def test_a_bad_pool_file_is_refused_at_start(home: Path, monkeypatch: pytest.MonkeyPatch,
                                             pool: dict[str, Any], mode: int,
                                             error: str) -> None:
    from infrakit.plugins.instance.redfish import RedfishInstancePlugin

    path = home / "pool.yml"
    path.write_text(json.dumps(pool))
    os.chmod(path, mode)
    monkeypatch.setenv("INFRAKIT_REDFISH_POOL", str(path))
    with pytest.raises(PluginError, match=re.escape(error)):
        RedfishInstancePlugin("instance-redfish", home / "state")


def test_without_a_pool_the_error_says_how_to_give_one(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from infrakit.plugins.instance.redfish import RedfishInstancePlugin

    for var in ("INFRAKIT_REDFISH_POOL", "INFRAKIT_REDFISH_URL"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(PluginError, match=r"no pool: write the pool file .*pool.yml.*"
                                          r"\$INFRAKIT_REDFISH_URL"):
        RedfishInstancePlugin("instance-redfish", home / "state")


def test_one_bmc_may_come_from_the_environment(bmc: Emulator, home: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from infrakit.plugins.instance.redfish import RedfishInstancePlugin

    monkeypatch.delenv("INFRAKIT_REDFISH_POOL", raising=False)
    monkeypatch.setenv("INFRAKIT_REDFISH_URL", bmc.url)
    monkeypatch.setenv("INFRAKIT_REDFISH_USERNAME", USER)
    monkeypatch.setenv("INFRAKIT_REDFISH_PASSWORD", PASSWORD)
    plugin = RedfishInstancePlugin("instance-redfish", home / "state", power_timeout=30)
    assert plugin.provision(Spec(properties={"MinCPUs": 64})) == "bmc-1"


def test_a_bmc_that_stops_answering_leaves_its_servers_described_not_lost(
        plugin: Any, bmc: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    iid = plugin.provision(Spec(properties={"MinCPUs": 32}))
    stop_process(bmc.proc)
    [desc] = plugin.describe_instances({}, True)
    assert desc.id == iid and desc.properties["PowerState"] == "Unknown"
    assert plugin.describe_ended({}) == []
    assert "BMC 'r1': listing its systems: it cannot be reached" in caplog.text
    with pytest.raises(PluginError, match=r"BMC 'r1': stopping system \S+: it cannot be "
                                          r"reached \(connection refused\)"):
        plugin.destroy(iid)
    [again] = plugin.describe_instances({}, False)  # kept, to destroy once it answers
    assert again.id == iid
