"""Unit tests of the JSON-RPC envelope codec and the wire structs (no processes)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infrakit.rpc import jsonrpc
from infrakit.rpc.jsonrpc import RPCError, decode_response, parse_request
from infrakit.spi.instance import INSTANCE
from infrakit.spi.types import Allocation, Attachment, Description, Index, Spec

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
text = st.text(max_size=20)
json_scalars = st.none() | st.booleans() | INT64 | text | st.floats(
    allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
tags = st.none() | st.dictionaries(text, text, max_size=5)
attachments = st.builds(Attachment, id=text, type=text)
specs = st.builds(
    Spec,
    properties=json_values,
    tags=tags,
    init=text,
    logical_id=st.none() | text,
    attachments=st.none() | st.lists(attachments, max_size=3),
)
descriptions = st.builds(
    Description,
    id=text,
    logical_id=st.none() | text,
    tags=tags,
    properties=st.just(msgspec.UNSET) | json_values,
)
allocations = st.builds(
    Allocation,
    size=st.integers(min_value=0, max_value=2**32),
    logical_ids=st.none() | st.lists(text, max_size=5),
)


def _body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _request(**fields: Any) -> bytes:
    return _body({"jsonrpc": "2.0", "method": "Instance.Destroy", "params": {}, "id": 1,
                  **fields})


# -- wire structs -------------------------------------------------------------------------


@given(specs)
def test_spec_round_trips(spec: Spec) -> None:
    raw = msgspec.json.encode(spec)
    assert msgspec.json.decode(raw, type=Spec) == spec
    assert set(json.loads(raw)) == {"Properties", "Tags", "Init", "LogicalID", "Attachments"}


@given(descriptions)
def test_description_round_trips_and_properties_only_when_set(desc: Description) -> None:
    raw = msgspec.json.encode(desc)
    assert msgspec.json.decode(raw, type=Description) == desc
    keys = set(json.loads(raw))
    expected = {"ID", "LogicalID", "Tags"}
    if desc.properties is not msgspec.UNSET:
        expected.add("Properties")
    assert keys == expected


@given(allocations)
def test_allocation_round_trips(alloc: Allocation) -> None:
    raw = msgspec.json.encode(alloc)
    assert msgspec.json.decode(raw, type=Allocation) == alloc
    assert set(json.loads(raw)) == {"Size", "LogicalIDs"}


def test_absent_optional_fields_encode_as_null() -> None:
    """The reference sends a missing logical ID and empty lists and maps as null."""
    assert json.loads(msgspec.json.encode(Spec())) == {
        "Properties": None, "Tags": None, "Init": "", "LogicalID": None, "Attachments": None}
    assert json.loads(msgspec.json.encode(Allocation(size=3))) == {"Size": 3, "LogicalIDs": None}
    assert json.loads(msgspec.json.encode(Index(group="g", sequence=2))) == {
        "Group": "g", "Sequence": 2}


def test_request_structs_use_pascal_case_names() -> None:
    method = INSTANCE.methods["Instance.DescribeInstances"]
    req = method.build("ec2", ({"a": "b"}, True))
    assert json.loads(msgspec.json.encode(req)) == {
        "Type": "ec2", "Tags": {"a": "b"}, "Properties": True}


# -- parse_request: the envelope ----------------------------------------------------------


def test_parse_request_reads_method_params_and_id() -> None:
    req = parse_request(_request(params={"Instance": "i-1"}, id=42))
    assert req.method == "Instance.Destroy"
    assert json.loads(bytes(req.params)) == {"Instance": "i-1"}
    assert req.id == 42


@pytest.mark.parametrize("body", [b"", b"nope", b"{", b'{"jsonrpc": "2.0",}', b"\x00"])
def test_body_that_is_not_json_is_parse_error(body: bytes) -> None:
    with pytest.raises(RPCError) as info:
        parse_request(body)
    assert info.value.code == jsonrpc.PARSE_ERROR == -32700


def test_invalid_utf8_is_parse_error() -> None:
    with pytest.raises(RPCError) as info:
        parse_request(b'{"jsonrpc": "2.0", "method": "\xff\xfe", "id": 1}')
    assert info.value.code == -32700


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"jsonrpc": "2.0", "method": "m", "id": 1, "params": ' + b"[" * 100_000,
        b'{"jsonrpc": "2.0", "method": "m", "id": 1, "params": {"a": '
        + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001,
    ],
    ids=["open-arrays", "closed-arrays", "params-open", "params-closed-objects"],
)
def test_deep_nesting_is_an_rpc_error_not_a_crash(body: bytes) -> None:
    with pytest.raises(RPCError) as info:
        parse_request(body)
    assert info.value.code in (-32700, -32600)


def test_params_array_of_one_object_is_accepted() -> None:
    req = parse_request(_request(params=[{"Instance": "i-1"}]))
    assert json.loads(bytes(req.params)) == {"Instance": "i-1"}


@pytest.mark.parametrize("params", [[{}, {}], [], [{"a": 1}, {"b": 2}, {"c": 3}]])
def test_params_array_not_of_one_object_is_invalid_params(params: list[Any]) -> None:
    with pytest.raises(RPCError) as info:
        parse_request(_request(params=params, id=7))
    assert info.value.code == jsonrpc.INVALID_PARAMS == -32602
    assert info.value.data == 7  # the id to answer with


@pytest.mark.parametrize("params", [None, "absent"])
def test_null_or_missing_params_mean_empty_object(params: Any) -> None:
    fields = {"jsonrpc": "2.0", "method": "Handshake.Types", "id": 1}
    if params != "absent":
        fields["params"] = params
    req = parse_request(_body(fields))
    assert json.loads(bytes(req.params)) == {}


@pytest.mark.parametrize("rid", [0, 1, -1, 2**63 - 1, -(2**63), 6137413926720431094, "abc", "",
                                 None])
def test_valid_ids_are_kept_exactly(rid: Any) -> None:
    req = parse_request(_request(id=rid))
    assert req.id == rid
    assert type(req.id) is type(rid)


def test_fractional_number_id_is_accepted() -> None:
    """JSON-RPC 2.0: an id MUST be a String, Number or Null, and the answer MUST carry the
    same value. 1.5 is a Number (one that SHOULD NOT be used, but MAY)."""
    req = parse_request(_request(id=1.5))
    assert req.id == 1.5


@pytest.mark.parametrize("rid", [True, False, [1], {"a": 1}])
def test_id_of_wrong_type_is_invalid_request(rid: Any) -> None:
    with pytest.raises(RPCError) as info:
        parse_request(_request(id=rid))
    assert info.value.code == jsonrpc.INVALID_REQUEST == -32600


def test_notification_has_unset_id() -> None:
    req = parse_request(_body({"jsonrpc": "2.0", "method": "Handshake.Types", "params": {}}))
    assert req.id is msgspec.UNSET


def test_explicit_null_id_is_not_a_notification() -> None:
    req = parse_request(_request(id=None))
    assert req.id is None


@pytest.mark.parametrize("version", ["1.0", 2.0, None, "absent"])
def test_wrong_or_missing_jsonrpc_version_is_invalid_request(version: Any) -> None:
    fields: dict[str, Any] = {"method": "Instance.Destroy", "params": {}, "id": 12}
    if version != "absent":
        fields["jsonrpc"] = version
    with pytest.raises(RPCError) as info:
        parse_request(_body(fields))
    assert info.value.code == -32600
    assert info.value.message == "jsonrpc must be 2.0"
    assert info.value.data == 12


@pytest.mark.parametrize("method", ["", 5, None, "absent"])
def test_missing_or_bad_method_is_invalid_request(method: Any) -> None:
    fields: dict[str, Any] = {"jsonrpc": "2.0", "params": {}, "id": 3}
    if method != "absent":
        fields["method"] = method
    with pytest.raises(RPCError) as info:
        parse_request(_body(fields))
    assert info.value.code == -32600


@pytest.mark.parametrize("body", [b"[]", b"[1]", b"1", b'"x"', b"null"])
def test_envelope_not_an_object_is_invalid_request(body: bytes) -> None:
    with pytest.raises(RPCError) as info:
        parse_request(body)
    assert info.value.code == -32600


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_parse_request_only_ever_raises_rpc_error(body: bytes) -> None:
    try:
        req = parse_request(body)
    except RPCError as exc:
        assert exc.code in (-32700, -32600, -32602)
    else:
        assert isinstance(req.method, str) and req.method


@settings(max_examples=200)
@given(json_values)
def test_parse_request_of_any_json_value_raises_only_rpc_error(value: Any) -> None:
    for body in (_body(value), _request(params=value), _request(id=value)):
        try:
            parse_request(body)
        except RPCError as exc:
            assert exc.code in (-32700, -32600, -32602)


@given(st.text(min_size=1, max_size=30), json_values, INT64)
def test_encode_request_parses_back(method: str, params: Any, rid: int) -> None:
    used, body = jsonrpc.encode_request(method, {"P": params}, rid)
    assert used == rid
    req = parse_request(body)
    assert (req.method, req.id) == (method, rid)
    assert msgspec.json.decode(bytes(req.params)) == {"P": params}


def test_encode_request_numbers_calls() -> None:
    first, _ = jsonrpc.encode_request("M", {})
    second, _ = jsonrpc.encode_request("M", {})
    assert second > first


# -- decode_params ------------------------------------------------------------------------


def _params_error(params: Any) -> RPCError:
    method = INSTANCE.methods["Instance.Destroy"]
    req = parse_request(_request(params=params))
    with pytest.raises(RPCError) as info:
        jsonrpc.decode_params(msgspec.json.Decoder(method.request), req)
    return info.value


def test_decode_params_names_the_wrongly_typed_field() -> None:
    err = _params_error({"Instance": 5})
    assert err.code == -32602
    assert "`params.Instance`" in err.message


def test_decode_params_names_the_missing_field() -> None:
    err = _params_error({"Type": ""})
    assert err.code == -32602
    assert "Instance" in err.message


# -- responses ----------------------------------------------------------------------------


@given(st.one_of(INT64, text, st.none()), json_values)
def test_encode_result_echoes_id(rid: Any, value: Any) -> None:
    out = json.loads(jsonrpc.encode_result(rid, value))
    assert out == {"jsonrpc": "2.0", "result": value, "id": rid}


def test_encode_error_shape() -> None:
    out = json.loads(jsonrpc.encode_error(9, -32000, "boom"))
    assert out == {"jsonrpc": "2.0", "error": {"code": -32000, "message": "boom", "data": None},
                   "id": 9}


@given(st.integers(min_value=-(2**31), max_value=2**31 - 1), text, json_values)
def test_decode_response_raises_the_error_it_carries(code: int, message: str,
                                                     data: Any) -> None:
    body = _body({"jsonrpc": "2.0", "error": {"code": code, "message": message, "data": data},
                  "id": 1})
    with pytest.raises(RPCError) as info:
        decode_response(body, dict)
    assert info.value.code == code
    assert info.value.message == message
    assert str(info.value) == message
    assert info.value.data == data


def test_decode_response_returns_typed_result() -> None:
    method = INSTANCE.methods["Instance.Provision"]
    body = _body({"jsonrpc": "2.0", "result": {"Type": "", "ID": "i-9"}, "id": 1})
    assert method.unwrap(decode_response(body, method.result)) == "i-9"


@pytest.mark.parametrize("body", [b"", b"not json", b"[" * 100_000])
def test_decode_response_of_malformed_body_is_rpc_error(body: bytes) -> None:
    with pytest.raises(RPCError) as info:
        decode_response(body, dict)
    assert info.value.code == -32700


def test_decode_response_without_result_or_error_is_rpc_error() -> None:
    with pytest.raises(RPCError, match="no result and no error"):
        decode_response(_body({"jsonrpc": "2.0", "id": 1}), dict)


def test_decode_response_of_unexpected_result_type_is_rpc_error() -> None:
    method = INSTANCE.methods["Instance.Provision"]
    with pytest.raises(RPCError) as info:
        decode_response(_body({"jsonrpc": "2.0", "result": {"ID": 5}, "id": 1}), method.result)
    assert "ID" in info.value.message


def test_decode_response_null_result_is_a_result() -> None:
    """``"result": null`` is a valid answer, not 'no result'."""
    assert decode_response(_body({"jsonrpc": "2.0", "result": None, "id": 1}),
                           type(None)) is None


def test_decode_response_refuses_an_answer_to_another_request() -> None:
    body = b'{"jsonrpc":"2.0","result":{"Type":"","OK":true},"id":41}'
    with pytest.raises(jsonrpc.RPCError) as err:
        jsonrpc.decode_response(body, dict, request_id=42)
    assert "41" in err.value.message and "42" in err.value.message
    assert jsonrpc.decode_response(body, dict, request_id=41) == {"Type": "", "OK": True}
