"""Batch methods (``Instance.ProvisionEach``, ``Flavor.PrepareEach``, ``Flavor.HealthyEach``),
on real plugin processes: served for free from the one-item verbs, served natively by the
built-in plugins, and replaced by one-item calls against a plugin that lacks them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from infrakit.rpc.client import AsyncRPCClient
from infrakit.rpc.typed import AsyncFlavorClient, AsyncInstanceClient
from infrakit.spi import Allocation, Description, Health, HealthReport, Index, Spec
from infrakit.spi.errors import CallFailed
from tests.conftest import StartScript
from tests.helpers import error_of, result_of

ONLY_VERBS = '''
import itertools, sys
from pathlib import Path
from infrakit.rpc.server import serve
from infrakit.spi import Health, PluginError
from infrakit.plugins.flavor.vanilla import VanillaFlavor

ids = itertools.count(1)

class Instances:
    """Writes only the one-item verbs; ProvisionEach comes from the runtime."""

    def provision(self, spec):
        if (spec.properties or {}).get("bad"):
            raise PluginError("Properties.bad: refused")
        if (spec.properties or {}).get("crash"):
            raise ZeroDivisionError("boom")
        return f"i-{next(ids)}"

    def describe_instances(self, tags, properties):
        return []

class Judge(VanillaFlavor):
    """Overrides healthy() of a base class that has healthy_each(): its own verdict wins."""

    def healthy(self, properties, instance):
        return Health.UNHEALTHY if instance.id.startswith("bad") else Health.HEALTHY

serve(sys.argv[2] if len(sys.argv) > 2 else "verbs", instance=Instances(), flavor=Judge(),
      directory=Path(sys.argv[1]))
'''


def test_batch_method_is_served_from_the_one_item_verb(start_script: StartScript) -> None:
    sock = start_script(ONLY_VERBS, "verbs").path
    result = result_of(sock, "Instance.ProvisionEach", {"Type": "", "Specs": [
        {"Properties": {}}, {"Properties": {"bad": True}}, {"Properties": {"crash": True}},
        {"Properties": {}}]})
    assert result["Type"] == ""
    ok1, bad, crash, ok2 = result["Results"]
    assert ok1 == {"ID": "i-1"} and ok2 == {"ID": "i-2"}
    assert bad == {"Error": "Properties.bad: refused"}
    assert crash == {"Error": "Instance.ProvisionEach failed: ZeroDivisionError: boom"}


def test_subclass_overriding_the_verb_is_not_bypassed_by_an_inherited_batch(
        start_script: StartScript) -> None:
    sock = start_script(ONLY_VERBS, "verbs").path
    result = result_of(sock, "Flavor.HealthyEach", {"Type": "", "Properties": {}, "Instances": [
        {"ID": "good-1"}, {"ID": "bad-1"}]})
    assert result["Results"] == [{"Health": 1}, {"Health": 2}]


def test_batch_request_with_a_wrong_field_is_invalid_params(start_script: StartScript) -> None:
    sock = start_script(ONLY_VERBS, "verbs").path
    err = error_of(sock, "Instance.ProvisionEach", {"Type": "", "Specs": [{"Init": 5}]})
    assert err["code"] == -32602 and "Specs[0].Init" in err["message"]


def test_file_plugin_provisions_a_batch_durably(home: Path, instance_file: Path) -> None:
    specs = [{"Tags": {"n": str(n)}, "LogicalID": f"L{n}" if n % 2 else None}
             for n in range(70)]  # more than one block of reserved IDs
    results = result_of(instance_file, "Instance.ProvisionEach",
                        {"Type": "", "Specs": specs})["Results"]
    ids = [r["ID"] for r in results]
    assert len(set(ids)) == 70
    data = home / "instance-file" / "instance-file"
    assert {p.name for p in data.glob("instance-*.json")} == {f"{i}.json" for i in ids}
    assert not list(data.glob(".*.tmp"))
    described = result_of(instance_file, "Instance.DescribeInstances",
                          {"Type": "", "Tags": {"n": "3"}})["Descriptions"]
    assert [(d["ID"], d["LogicalID"]) for d in described] == [(ids[3], "L3")]


def test_vanilla_batches_natively(flavor_vanilla: Path) -> None:
    props = {"Init": ["echo hi"], "Tags": {"role": "web"}}
    prepared = result_of(flavor_vanilla, "Flavor.PrepareEach", {
        "Type": "", "Properties": props, "Allocation": {"Size": 2},
        "Items": [{"Spec": {"Init": "first"}, "Index": {"Group": "g", "Sequence": n}}
                  for n in range(2)]})["Results"]
    assert [r["Spec"]["Init"] for r in prepared] == ["first\necho hi"] * 2
    assert all(r["Spec"]["Tags"] == {"role": "web"} for r in prepared)
    bad = error_of(flavor_vanilla, "Flavor.PrepareEach", {
        "Type": "", "Properties": {"Nope": 1}, "Items": [{"Spec": {}}]})
    assert "Nope" in bad["message"]
    health = result_of(flavor_vanilla, "Flavor.HealthyEach", {
        "Type": "", "Properties": {"Health": {"TCP": "127.0.0.1:{{ .Properties.port }}",
                                              "Timeout": 1}},
        "Instances": [{"ID": "a", "Properties": {"port": 1}}, {"ID": "b"}]})["Results"]
    # nothing listens on port 1: unhealthy; no port to aim at: unknown
    assert health == [
        {"Health": 2, "Reason": "TCP 127.0.0.1:1: connection refused"},
        {"Health": 0, "Reason": "the probe names {{ .Properties.port }}, which this member "
                                "does not have"}]


def test_client_falls_back_to_one_item_calls_where_the_batch_is_missing(
        start_script: StartScript) -> None:
    """The reference's server answers a method it lacks with -32000 "rpc: can't find
    method"; the bare plugin of the interop tests does the same."""
    from tests.test_interop import BARE

    sock = start_script(BARE.replace("KIND = sys.argv[2]", 'KIND = "instance"'),
                        "bare-instance").path
    flavor_sock = start_script(ONLY_VERBS, "verbs").path

    async def run() -> None:
        async with AsyncRPCClient(sock) as rpc, AsyncRPCClient(flavor_sock) as frpc:
            inst = AsyncInstanceClient(rpc)
            ids = await inst.provision_each([Spec(tags={"g": "x"}), Spec(tags={"g": "x"})])
            assert all(isinstance(i, str) for i in ids) and len(set(ids)) == 2
            assert rpc.unbatched == {"Instance.ProvisionEach"}
            assert {d.id for d in await inst.describe_instances({"g": "x"}, False)} == set(ids)
            again = await inst.provision_each([Spec()])  # remembered: straight to one-item
            assert len(again) == 1 and isinstance(again[0], str)
            flavor = AsyncFlavorClient(frpc)
            out = await flavor.prepare_each({}, Allocation(size=1),
                                            [(Spec(init="x"), Index(group="g"))])
            assert isinstance(out[0], Spec) and out[0].init == "x"
            assert frpc.unbatched == set()  # served (from the one-item verb)
            health = await flavor.healthy_each({}, [Description(id="bad-2")])
            assert health == [HealthReport(Health.UNHEALTHY)]
            provisioned = await AsyncInstanceClient(frpc).provision_each(
                [Spec(properties={"bad": True})])
            assert isinstance(provisioned[0], CallFailed)
            assert provisioned[0].reason == "Properties.bad: refused"
            assert str(provisioned[0]) == "Instance plugin 'verbs': Properties.bad: refused"

    asyncio.run(run())
