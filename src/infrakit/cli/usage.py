"""What ``infrakit group usage`` prints: member-hours per group and config, and with a
price table (:mod:`infrakit.cli.prices`), what they cost, with the totals."""

from __future__ import annotations

from typing import Any

import click

from infrakit.cli.output import TABLES, dump, printable, table
from infrakit.cli.prices import PriceTable
from infrakit.spi.group import UsageRecord

HOUR = 3600.0


def report(records: list[UsageRecord], prices: PriceTable | None,
           since_day: str | None) -> dict[str, Any]:
    """The usage as data (what ``-o json`` and ``-o yaml`` print): a line per group and
    config, and the totals."""
    lines = []
    hours = cost = unpriced = 0.0
    for r in records:
        line: dict[str, Any] = {
            "Group": r.group, "Config": r.config, "Plugin": r.plugin or None,
            "Properties": r.properties, "First": r.first, "Last": r.last,
            "MemberHours": r.seconds / HOUR}
        hours += line["MemberHours"]
        if prices is not None:
            price = prices.price_of(r)
            line["PerHour"] = price.per_hour if price is not None else None
            line["Cost"] = price.per_hour * line["MemberHours"] if price is not None else None
            if price is None:
                unpriced += line["MemberHours"]
            else:
                cost += line["Cost"]
        lines.append(line)
    out: dict[str, Any] = {"Since": since_day, "Usage": lines, "MemberHours": hours}
    if prices is not None:
        out.update(Currency=prices.currency or None, Cost=cost, UnpricedMemberHours=unpriced)
    return out


def print_report(data: dict[str, Any], output: str, prices_file: str | None) -> None:
    if output not in TABLES:
        click.echo(dump(data, output))
        return
    priced = prices_file is not None
    since = f" since {data['Since']} (UTC)" if data["Since"] else ""
    if not data["Usage"]:
        click.echo(f"no usage recorded{since}")
        return
    if since:
        click.echo(f"usage{since}")
    headers = ["GROUP", "CONFIG", "PLUGIN", "DAYS", "MEMBER-HOURS"]
    rows = []
    for line in data["Usage"]:
        days = line["First"] if line["First"] == line["Last"] else \
            f"{line['First']}..{line['Last']}"
        row = [line["Group"], line["Config"], line["Plugin"] or "(unknown)", days,
               f"{line['MemberHours']:.2f}"]
        if priced:
            row += ["-", "-"] if line["PerHour"] is None else \
                [f"{line['PerHour']:g}", f"{line['Cost']:.2f}"]
        rows.append(row)
    click.echo(table(headers + (["PER HOUR", "COST"] if priced else []), rows))
    total = f"total: {data['MemberHours']:.2f} member-hours"
    if priced:
        currency = f" {data['Currency']}" if data["Currency"] else ""
        total += f", cost {data['Cost']:.2f}{printable(currency)}"
        if data["UnpricedMemberHours"]:
            total += (f"; {data['UnpricedMemberHours']:.2f} member-hours match no price in "
                      f"{printable(prices_file or '')} (cost -)")
    click.echo(total)
