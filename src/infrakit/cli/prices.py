"""The price table of ``infrakit group usage --prices FILE``: what an hour of one member
costs, by instance plugin and, optionally, config hash or instance properties.

A file (YAML or JSON)::

    currency: USD                      # optional: printed beside the costs
    prices:
      - plugin: instance-aws           # the group's Instance.Plugin, as committed
        properties: {InstanceType: m5.large}   # optional: these properties must match
        per_hour: 0.096
      - plugin: instance-aws           # every other config of instance-aws
        per_hour: 0.05
      - plugin: instance-process
        config: 6drwciyinzycumf3x2pkfcc6wzmg2wna  # optional: one config hash only
        per_hour: 0.01

The first price that matches a config's usage prices it, so the specific ones go first.
The file is read whole and checked before anything else is done: an error names the
field and the reason (``prices.yml: prices[2].per_hour: must be a number ≥ 0``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import click

from infrakit.cli.specfile import read_document
from infrakit.spi.group import UsageRecord

_TOP = ("currency", "prices")
_ENTRY = ("config", "per_hour", "plugin", "properties")


class PriceFileError(click.ClickException):
    """A price table that is not as :mod:`infrakit.cli.prices` describes."""


@dataclass(frozen=True)
class Price:
    plugin: str
    per_hour: float
    config: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)

    def matches(self, record: UsageRecord) -> bool:
        if self.plugin != record.plugin or self.config not in (None, record.config):
            return False
        props = record.properties if isinstance(record.properties, dict) else {}
        return all(key in props and props[key] == value
                   for key, value in self.properties.items())


@dataclass(frozen=True)
class PriceTable:
    prices: list[Price]
    currency: str = ""

    def price_of(self, record: UsageRecord) -> Price | None:
        """The first price that matches ``record``'s plugin and config."""
        return next((p for p in self.prices if p.matches(record)), None)


def read_prices(source: str) -> PriceTable:
    """Read and check the price table in ``source`` (a path, or ``-``)."""
    data = read_document(source)

    def bad(where: str, why: str) -> PriceFileError:
        return PriceFileError(f"{source}: {where}: {why}")

    if not isinstance(data, dict):
        raise PriceFileError(f"{source}: must be a mapping with 'prices', a list of prices")
    _known(data, _TOP, "", bad)
    currency = data.get("currency", "")
    if not isinstance(currency, str):
        raise bad("currency", "must be a string (USD, EUR, ...)")
    if "prices" not in data:
        raise bad("prices", "missing: give a list of prices")
    entries = data["prices"]
    if not isinstance(entries, list) or not entries:
        raise bad("prices", "must be a list of at least one price")
    return PriceTable(prices=[_price(e, f"prices[{n}]", bad) for n, e in enumerate(entries)],
                      currency=currency)


def _known(data: dict[Any, Any], known: tuple[str, ...], where: str,
           bad: Any) -> None:
    for key in data:
        if key not in known:
            raise bad(f"{where}{key}", f"unknown field (known: {', '.join(known)})")


def _price(entry: Any, where: str, bad: Any) -> Price:
    if not isinstance(entry, dict):
        raise bad(where, "must be a mapping of plugin, per_hour and optionally config and "
                         "properties")
    _known(entry, _ENTRY, f"{where}.", bad)
    plugin = entry.get("plugin")
    if not isinstance(plugin, str) or not plugin:
        raise bad(f"{where}.plugin", "missing: the instance plugin's name, as the group "
                                     "spec's Instance.Plugin gives it" if plugin is None
                  else "must be the instance plugin's name (a string)")
    config = entry.get("config")
    if config is not None and (not isinstance(config, str) or not config):
        raise bad(f"{where}.config", "must be a config hash, as 'infrakit group usage' "
                                     "prints it")
    properties = entry.get("properties", {})
    if not isinstance(properties, dict):
        raise bad(f"{where}.properties", "must be a mapping of instance properties to the "
                                         "values they must have")
    per_hour = entry.get("per_hour")
    if per_hour is None:
        raise bad(f"{where}.per_hour", "missing: the price of one member for one hour")
    if isinstance(per_hour, bool) or not isinstance(per_hour, (int, float)) \
            or not math.isfinite(per_hour) or per_hour < 0:
        raise bad(f"{where}.per_hour", "must be a number ≥ 0")
    return Price(plugin=plugin, per_hour=float(per_hour), config=config,
                 properties=properties)
