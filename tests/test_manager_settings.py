"""The settings of `infrakit manager` and of `infrakit plugin start group|manager`: one
table gives the options and the variables, and a bad value is refused by name."""

from __future__ import annotations

import subprocess

import click
import pytest

from infrakit.cli.group_tables import spec_row
from infrakit.cli.manager import command as manager_command
from infrakit.manager.run import STORE_KINDS, Settings
from infrakit.settings import GROUP_POLL, MANAGER, STORES, SettingError
from infrakit.spi.group import GroupSpec
from tests.conftest import Cli

#: A value for each setting other than its default.
OTHER = {"INFRAKIT_MANAGER_STORE": "etcd", "INFRAKIT_ETCD_ENDPOINTS": "a:1,b:2",
         "INFRAKIT_ETCD_PREFIX": "/other/", "INFRAKIT_LEASE_TTL": "7",
         "INFRAKIT_MANAGER_LISTEN": "9000", "INFRAKIT_TLS_CERT": "c.pem",
         "INFRAKIT_TLS_KEY": "k.pem", "INFRAKIT_TLS_CA": "ca.pem",
         "INFRAKIT_MANAGER_TOKEN_FILE": "token", "INFRAKIT_MANAGER_ADVERTISE": "me.example",
         "INFRAKIT_ALERT_WEBHOOKS": "http://127.0.0.1:9/a,https://hooks.example/b",
         "INFRAKIT_ALERT_NOT_CONVERGED_FOR": "30", "INFRAKIT_ALERT_FOR": "0",
         "INFRAKIT_ALERT_REPEAT": "3600"}


def refused(done: subprocess.CompletedProcess[str], reason: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert reason in done.stderr


def test_a_bad_group_poll_is_refused_by_name(cli: Cli) -> None:
    for kind in ("group", "manager"):
        done = cli("plugin", "start", kind, env={"INFRAKIT_GROUP_POLL": "abc"})
        refused(done, "INFRAKIT_GROUP_POLL: 'abc' is not a number of seconds")
    done = cli("plugin", "start", "group", env={"INFRAKIT_GROUP_POLL": "-1"})
    refused(done, "INFRAKIT_GROUP_POLL: '-1' is not a positive number of seconds")


def test_a_bad_lease_ttl_is_refused_by_variable_or_option(cli: Cli) -> None:
    refused(cli("plugin", "start", "manager", env={"INFRAKIT_LEASE_TTL": "abc"}),
            "INFRAKIT_LEASE_TTL: 'abc' is not a whole number of seconds")
    refused(cli("manager", "status", env={"INFRAKIT_LEASE_TTL": "1"}),
            "INFRAKIT_LEASE_TTL: '1' is under the minimum of 2 seconds")
    refused(cli("manager", "--lease-ttl", "x", "status"),
            "--lease-ttl: 'x' is not a whole number of seconds")
    refused(cli("manager", "status", env={"INFRAKIT_MANAGER_STORE": "mysql"}),
            "INFRAKIT_MANAGER_STORE: 'mysql' is not one of sqlite, etcd")


def _from_options(*args: str) -> Settings:
    ctx = manager_command.make_context("manager", [*args, "status"])
    return Settings(**{field: ctx.params[field] for field in MANAGER})


@pytest.mark.parametrize("environ", [{}, OTHER], ids=["defaults", "set"])
def test_the_options_and_the_variables_are_one_table(monkeypatch: pytest.MonkeyPatch,
                                                     environ: dict[str, str]) -> None:
    options = {str(p.name): p for p in manager_command.params
               if isinstance(p, click.Option)}
    for field, setting in MANAGER.items():
        assert options[field].envvar == setting.env
        assert options[field].multiple == setting.repeatable
        assert options[field].default == (() if setting.repeatable else setting.default)
        monkeypatch.delenv(setting.env, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert _from_options() == Settings.from_env()
    assert tuple(STORE_KINDS) == STORES


def test_an_option_overrides_its_variable_and_is_parsed_alike(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFRAKIT_LEASE_TTL", "9")
    assert _from_options("--lease-ttl", "3").lease_ttl == 3
    assert _from_options("--etcd-endpoints", "x:1,,y:2").endpoints == ("x:1", "y:2")


def test_alert_webhooks_are_repeated_or_comma_separated_and_bad_ones_refused(
        monkeypatch: pytest.MonkeyPatch, cli: Cli) -> None:
    monkeypatch.delenv("INFRAKIT_ALERT_WEBHOOKS", raising=False)
    assert _from_options().alert_webhooks == ()
    assert _from_options("--alert-webhook", "http://127.0.0.1:9/a", "--alert-webhook",
                         "https://h.example/b?t=1").alert_webhooks == (
        "http://127.0.0.1:9/a", "https://h.example/b?t=1")
    monkeypatch.setenv("INFRAKIT_ALERT_WEBHOOKS", "http://a.example/,http://b.example/")
    assert Settings.from_env().alert_webhooks == _from_options().alert_webhooks == (
        "http://a.example/", "http://b.example/")
    refused(cli("manager", "--alert-webhook", "ftp://h.example/x", "status"),
            "--alert-webhook: 'ftp://h.example/x' is not an http:// or https:// URL with a "
            "host (alerts are POSTed to it)")
    refused(cli("manager", "--alert-webhook", "http://h.example:port/", "status"),
            "--alert-webhook: 'http://h.example:port/' is not a URL: Port could not be cast "
            "to integer value")
    refused(cli("plugin", "start", "manager",
                env={"INFRAKIT_ALERT_WEBHOOKS": "http://ok.example/,hooks.example"}),
            "INFRAKIT_ALERT_WEBHOOKS: 'http://ok.example/,hooks.example' has "
            "'hooks.example', which is not an http:// or https:// URL")
    refused(cli("manager", "--alert-for", "-1", "status"),
            "--alert-for: '-1' is not a number of seconds of 0 or more")


def test_the_group_poll_reads_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(GROUP_POLL.env, raising=False)
    assert GROUP_POLL.read() == 5.0
    monkeypatch.setenv(GROUP_POLL.env, "0.25")
    assert GROUP_POLL.read() == 0.25
    monkeypatch.setenv(GROUP_POLL.env, "nan")
    with pytest.raises(SettingError, match="INFRAKIT_GROUP_POLL: 'nan'"):
        GROUP_POLL.read()


def test_a_stored_spec_that_no_longer_parses_still_gets_a_row() -> None:
    good = GroupSpec(id="web", properties={
        "Allocation": {"LogicalIDs": ["a", "b"]},
        "Instance": {"Plugin": "instance-file"}, "Flavor": {"Plugin": "flavor-vanilla"}})
    assert spec_row(good) == ["web", "LogicalIDs: a, b", "instance-file", "flavor-vanilla"]
    assert spec_row(GroupSpec(id="old", properties={"Allocation": "ten"})) == ["old", "-", "-", "-"]
    assert spec_row(GroupSpec(id="raw", properties=[1])) == ["raw", "-", "-", "-"]
