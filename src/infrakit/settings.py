"""Every setting read from the environment, written once: its variable, the option that may
give it instead, its default, how it is parsed and checked, and its help.

``infrakit manager`` makes its options from this table, and ``infrakit plugin start``
reads the same variables through it, so both accept the same values and default alike. A
bad value is refused naming its variable (or option) and the reason. Standard library
only, so that any layer may read its settings here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SettingError(ValueError):
    """A value a setting cannot take: the message names the setting and says why."""


@dataclass(frozen=True)
class Setting(Generic[T]):
    env: str
    default: str
    """As it would be written in the environment, and parsed like any value given there."""
    parse: Callable[[str], T]
    """The value, or a ValueError whose message completes "'<value>' ..." with the reason."""
    help: str
    option: str = ""
    """The option of ``infrakit manager`` that may give the value instead."""
    metavar: str = ""
    repeatable: bool = False
    """The option may be given more than once; each is parsed alone and the tuples each
    gives are joined (the variable gives them all at once, comma-separated)."""
    flag: bool = False
    """The option takes no value: given, it turns the setting on (the variable: yes/no)."""

    def value(self, raw: str, name: str = "") -> T:
        """``raw`` parsed; one that cannot be raises a :class:`SettingError` naming
        ``name`` (by default the variable)."""
        try:
            return self.parse(raw)
        except ValueError as exc:
            raise SettingError(f"{name or self.env}: {raw!r} {exc}") from None

    def read(self) -> T:
        """The value the environment gives, or the default."""
        return self.value(os.environ.get(self.env, self.default))


def seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError("is not a positive number of seconds")
    return value


def seconds_or_zero(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError("is not a number of seconds of 0 or more")
    return value


def whole_seconds(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError("is not a whole number of seconds") from None
        if value < minimum:
            raise ValueError(f"is under the minimum of {minimum} seconds")
        return value

    return parse


def whole_number(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError("is not a whole number") from None
        if value < minimum:
            raise ValueError(f"is under the minimum of {minimum}")
        return value

    return parse


def yes_or_no(raw: str) -> bool:
    if raw.lower() in ("1", "yes", "true", "on"):
        return True
    if raw.lower() in ("", "0", "no", "false", "off"):
        return False
    raise ValueError("is not yes or no")


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"is not one of {', '.join(choices)}")
        return raw

    return parse


def comma_list(raw: str) -> tuple[str, ...]:
    return tuple(item for item in raw.split(",") if item)


LOOPBACK = "127.0.0.1"


def listen_address(raw: str) -> tuple[str, int] | None:
    """``[HOST:]PORT`` as (host, port), the host 127.0.0.1 unless given (``[::1]:PORT``
    for IPv6); None for the empty value, which means no listener."""
    if not raw:
        return None
    host, sep, port = raw.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not port.isdigit() or not 0 < int(port) < 65536 or (sep and not host):
        raise ValueError("is not [HOST:]PORT with a port in 1..65535")
    return host or LOOPBACK, int(port)


def listen_text(address: tuple[str, int] | None) -> str:
    """An address as :func:`listen_address` reads it back ("" for None)."""
    if address is None:
        return ""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def webhook_urls(raw: str) -> tuple[str, ...]:
    """Comma-separated ``http://`` or ``https://`` URLs, each with a host."""
    urls = comma_list(raw)
    for url in urls:
        why = _not_a_webhook(url)
        if why:
            raise ValueError(why if len(urls) == 1 else f"has {url!r}, which {why}")
    return urls


def _not_a_webhook(url: str) -> str:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port  # a port that is not a number raises
    except ValueError as exc:
        return f"is not a URL: {exc}"
    if parts.scheme not in ("http", "https") or not host:
        return "is not an http:// or https:// URL with a host (alerts are POSTed to it)"
    return ""


def key_prefix(raw: str) -> str:
    if not raw.startswith("/") or not raw.endswith("/"):
        raise ValueError("does not start and end with /")
    return raw


GROUP_POLL = Setting("INFRAKIT_GROUP_POLL", "5", seconds,
                     "Seconds between two passes of a group's controller.")

CALL_TIMEOUT = Setting(
    "INFRAKIT_CALL_TIMEOUT", "60", seconds,
    "Seconds a plugin waits for another plugin's answer (the group for its instance and "
    "flavor plugins) before it gives up and names the plugin that did not answer.")


KEEP_ENDED = Setting(
    "INFRAKIT_KEEP_ENDED", "5", whole_number(0),
    "How many instances of each group that ended by themselves keep their files (working "
    "directory and log), the most recent ones, and as many of those destroyed, so that "
    "`infrakit instance logs ID --previous` can tell why they died; 0 removes them at once.")

KEEP_ENDED_SECONDS = Setting(
    "INFRAKIT_KEEP_ENDED_SECONDS", "604800", seconds,
    "Seconds at most that the files of an instance that ended or was destroyed are kept "
    "(a week), however few of its group ended since.")


def waiting_timeout() -> float:
    """The CLI's default wait for a verb that makes its plugin call others (a commit
    validates with the flavor and the instance plugin; a destroy drains and destroys):
    longer than two such calls, so that when one hangs, the answer that names it comes
    back before the CLI gives up."""
    return 2 * CALL_TIMEOUT.read() + 15

METRICS_LISTEN = Setting(
    "INFRAKIT_METRICS_LISTEN", "", listen_address,
    "Also serve GET /metrics (Prometheus text format, read-only, plain HTTP) on this TCP "
    "port, on 127.0.0.1 unless HOST is given. The plugin's socket serves it either way.",
    option="--metrics-listen", metavar="[HOST:]PORT")

STORES = ("sqlite", "etcd")

MANAGER: dict[str, Setting[Any]] = {
    "store": Setting(
        "INFRAKIT_MANAGER_STORE", "sqlite", one_of(*STORES),
        "sqlite: one machine, specs in $INFRAKIT_HOME/manager, a lock file elects the "
        "leader. etcd: specs in etcd, a lease elects the leader.",
        option="--store", metavar="|".join(STORES)),
    "endpoints": Setting("INFRAKIT_ETCD_ENDPOINTS", "", comma_list,
                         "The etcd cluster, with --store etcd.",
                         option="--etcd-endpoints", metavar="URL,..."),
    "prefix": Setting("INFRAKIT_ETCD_PREFIX", "/infrakit/", key_prefix,
                      "Where in etcd these managers keep their state: one prefix per set of "
                      "managers sharing a cluster.", option="--etcd-prefix", metavar="PREFIX"),
    "lease_ttl": Setting("INFRAKIT_LEASE_TTL", "5", whole_seconds(2),
                         "Seconds a leader's etcd lease lives without renewal: a dead "
                         "leader's successor starts within this time.",
                         option="--lease-ttl", metavar="SECONDS"),
    "share_groups": Setting(
        "INFRAKIT_MANAGER_SHARE_GROUPS", "no", yes_or_no,
        "With --store etcd: share the groups among every manager started so, each group "
        "led by one of them (see `infrakit manager status`), instead of one leader running "
        "them all. Give it to every manager of the prefix, or to none.",
        option="--share-groups", flag=True),
    "listen": Setting("INFRAKIT_MANAGER_LISTEN", "", str,
                      "Also serve on TCP (HOST defaults to 127.0.0.1), for managers on other "
                      "machines to forward to: needs --tls-cert, --tls-key and --token-file.",
                      option="--listen", metavar="[HOST:]PORT"),
    "tls_cert": Setting("INFRAKIT_TLS_CERT", "", str, "The listener's certificate (PEM).",
                        option="--tls-cert", metavar="FILE"),
    "tls_key": Setting("INFRAKIT_TLS_KEY", "", str, "The certificate's private key (PEM).",
                       option="--tls-key", metavar="FILE"),
    "tls_ca": Setting("INFRAKIT_TLS_CA", "", str,
                      "What to trust in another manager's certificate [default: --tls-cert].",
                      option="--tls-ca", metavar="FILE"),
    "token_file": Setting("INFRAKIT_MANAGER_TOKEN_FILE", "", str,
                          "Who may call the listener: one bearer token (its holder is admin) "
                          "or a list of named tokens with roles (viewer, operator, admin; "
                          "see 'infrakit manager token add'), in a file only its owner may "
                          "read (mode 600). SIGHUP reads it again.",
                          option="--token-file", metavar="FILE"),
    "peer_token_file": Setting(
        "INFRAKIT_MANAGER_PEER_TOKEN_FILE", "", str,
        "The token this manager calls the leader's listener with, alone in a file of mode "
        "600, when --token-file lists named tokens [default: --token-file's one token].",
        option="--peer-token-file", metavar="FILE"),
    "advertise": Setting("INFRAKIT_MANAGER_ADVERTISE", "", str,
                         "The name other machines reach the listener by [default: the address "
                         "it binds, or this machine's name].",
                         option="--advertise", metavar="HOST"),
    "metrics_listen": METRICS_LISTEN,
    "alert_webhooks": Setting(
        "INFRAKIT_ALERT_WEBHOOKS", "", webhook_urls,
        "POST the groups' alerts to this URL, in Alertmanager's webhook format (firing, "
        "then resolved); repeat the option for more (the variable: comma-separated). Only "
        "the leading manager sends.", option="--alert-webhook", metavar="URL",
        repeatable=True),
    "alert_not_converged_for": Setting(
        "INFRAKIT_ALERT_NOT_CONVERGED_FOR", "600", seconds,
        "Seconds a group stays short of its desired healthy, up-to-date members before "
        "InfrakitGroupNotConverged fires.", option="--alert-not-converged-for",
        metavar="SECONDS"),
    "alert_for": Setting(
        "INFRAKIT_ALERT_FOR", "60", seconds_or_zero,
        "Seconds a group's circuit breaker stays open, or a plugin it calls unreachable, "
        "before InfrakitGroupBreakerOpen or InfrakitPluginDown fires.",
        option="--alert-for", metavar="SECONDS"),
    "alert_repeat": Setting(
        "INFRAKIT_ALERT_REPEAT", "14400", seconds,
        "Seconds between two sends of an alert that is still firing.",
        option="--alert-repeat", metavar="SECONDS"),
}
"""The settings of a manager, by the name of the field of
:class:`infrakit.manager.run.Settings` each fills."""

REDFISH: dict[str, Setting[Any]] = {
    "pool": Setting("INFRAKIT_REDFISH_POOL", "", str,
                    "The pool file of instance-redfish (YAML or JSON, mode 600): its BMCs, "
                    "their credentials, server templates and the user-data directory "
                    "[default: pool.yml in $INFRAKIT_HOME/instance-redfish/NAME]."),
    "url": Setting("INFRAKIT_REDFISH_URL", "", str,
                   "Without a pool file: the one Redfish service of the pool."),
    "username": Setting("INFRAKIT_REDFISH_USERNAME", "", str,
                        "Without a pool file: the user to log in to it as."),
    "password": Setting("INFRAKIT_REDFISH_PASSWORD", "", str,
                        "Without a pool file: that user's password."),
    "power_timeout": Setting("INFRAKIT_REDFISH_POWER_TIMEOUT", "300", seconds,
                             "Seconds a system may take to reach the power state asked "
                             "(on, at provision; off, after a forced power off)."),
}
"""The settings of the ``instance-redfish`` plugin."""
