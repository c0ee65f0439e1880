"""The typed clients and the caller-side protocols against the method tables: every verb,
blocking and async, with as many arguments as its request has fields, so that neither
side can lack a verb or drift from the wire."""

from __future__ import annotations

import inspect
from typing import Any

import msgspec.structs
import pytest

from infrakit.rpc import typed
from infrakit.spi import calls
from infrakit.spi.flavor import FLAVOR
from infrakit.spi.group import GROUP
from infrakit.spi.instance import INSTANCE
from infrakit.spi.methods import Interface

CASES = [(INSTANCE, "Instance"), (FLAVOR, "Flavor"), (GROUP, "Group")]


def _members(protocol: type) -> set[str]:
    return {n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")}


def _arity(fn: Any) -> int:
    return len(inspect.signature(fn).parameters) - 1  # less self


@pytest.mark.parametrize(("interface", "name"), CASES)
def test_every_verb_of_the_table_is_in_both_clients_and_protocols(interface: Interface,
                                                                   name: str) -> None:
    verbs = {m.attr for m in interface.methods.values()}
    for protocol in (getattr(calls, f"{name}API"), getattr(calls, f"Async{name}API")):
        assert _members(protocol) == verbs, protocol
    blocking, asynchronous = getattr(typed, f"{name}Client"), getattr(typed, f"Async{name}Client")
    for verb in verbs:
        assert not inspect.iscoroutinefunction(getattr(blocking, verb)), verb
        assert inspect.iscoroutinefunction(getattr(asynchronous, verb)), verb


@pytest.mark.parametrize(("interface", "name"), CASES)
def test_each_verb_takes_what_its_request_carries(interface: Interface, name: str) -> None:
    for method in interface.methods.values():
        fields = [f.name for f in msgspec.structs.fields(method.request) if f.name != "type"]
        for protocol in (getattr(calls, f"{name}API"), getattr(calls, f"Async{name}API")):
            assert _arity(getattr(protocol, method.attr)) == len(fields), (protocol, method.wire)
