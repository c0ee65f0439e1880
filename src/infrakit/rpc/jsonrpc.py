"""The JSON-RPC 2.0 envelope, shared by the server and both clients.

Requests are parsed in two steps: the envelope first, with ``params`` kept raw, then the
params straight into the method's request struct. That keeps a bad envelope (-32600) apart
from bad params (-32602) and decodes each byte once.
"""

from __future__ import annotations

import itertools
import re
from typing import Any, TypeVar

import msgspec

from infrakit.spi.types import MAX_BODY, mebibytes

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
APPLICATION_ERROR = -32000
"""The code of every fault a plugin reports about its own domain."""

MAX_DEPTH = 256
"""How deeply arrays and objects of a request may nest. The decoder's own limit is what
is left of the interpreter's recursion limit where it runs, so it moves with the stack; a
value accepted near it could not be answered, stored and read back, or forwarded to
another plugin, where each of those runs deeper. This limit is fixed and far below it."""

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_ids = itertools.count(1)


class RPCError(Exception):
    """A JSON-RPC error, raised by clients on an error response and by the server's parser."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def __str__(self) -> str:
        return self.message

    @property
    def method_not_found(self) -> bool:
        """The server lacks the method: our code, or the reference's RPC server's words
        (it answers -32000 ``rpc: can't find method "X"`` or ``... find service ...``)."""
        return self.code == METHOD_NOT_FOUND or (
            self.code == APPLICATION_ERROR and self.message.startswith("rpc: can't find "))


class RequestTooLarge(RPCError):
    """A request larger than a plugin accepts (:data:`~infrakit.spi.types.MAX_BODY`):
    refused by the caller, so never sent."""


class _Envelope(msgspec.Struct):
    """A request envelope; any field may be missing or of the wrong type until checked."""

    jsonrpc: Any = msgspec.UNSET
    method: Any = msgspec.UNSET
    params: msgspec.Raw = msgspec.Raw(b"{}")
    id: Any = msgspec.UNSET


class _ErrorObject(msgspec.Struct):
    code: int
    message: str
    data: Any = None


class _Response(msgspec.Struct):
    jsonrpc: str = "2.0"
    result: msgspec.Raw = msgspec.Raw(b"")
    error: _ErrorObject | None = None
    id: Any = None


_envelope_decoder = msgspec.json.Decoder(_Envelope)
_response_decoder = msgspec.json.Decoder(_Response)
_one_param = msgspec.json.Decoder(list[msgspec.Raw])


class Request(msgspec.Struct):
    """A parsed request envelope. ``id`` is ``UNSET`` for a notification."""

    method: str
    params: msgspec.Raw
    id: Any


def _decode(decoder: msgspec.json.Decoder[T], body: bytes | msgspec.Raw) -> T:
    """Decode, turning every way JSON can be bad into ``msgspec.DecodeError``."""
    try:
        return decoder.decode(body)
    except RecursionError:
        raise msgspec.DecodeError("JSON is nested too deeply") from None
    except UnicodeDecodeError:
        raise msgspec.DecodeError("JSON text is not valid UTF-8") from None


_PARENS = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_BRACKET_OR_QUOTE = bytes(b for b in range(256) if b not in b'[]{}"')
_RUN = re.compile(rb"\(+|\)+")
_ROUNDS = 16


def nesting_exceeds(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels deep in ``body`` (brackets
    inside strings do not count; unclosed ones do). Linear in the size of the body, and
    free for a body with fewer brackets than ``limit``."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    if b"\\" in body:  # an escaped backslash, then an escaped quote, ends no string: drop
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    # brackets and quotes only; "" (an empty string, or two strings side by side) holds no
    # bracket; what is left between a quote and the next is inside a string
    quoted = body.translate(None, _NOT_BRACKET_OR_QUOTE).replace(b'""', b"")
    parens = b"".join(quoted.split(b'"')[::2]).translate(_PARENS, _NOT_BRACKET)
    # each round drops the innermost pairs: one level less, and fewer runs to add up; once
    # a round drops little, the runs are long and few
    rounds = 0
    while rounds < _ROUNDS:
        shorter = parens.replace(b"()", b"")
        if len(shorter) == len(parens):
            break
        parens, rounds, before = shorter, rounds + 1, len(parens)
        if len(parens) * 4 > before * 3:
            break
    depth = rounds
    if depth > limit:
        return True
    for run in _RUN.findall(parens):
        depth += len(run) if run[:1] == b"(" else -len(run)
        if depth > limit:
            return True
    return False


def parse_request(body: bytes) -> Request:
    """Parse a request body. Raises :class:`RPCError` (-32700 or -32600) with ``data``
    holding the id to answer with, when one could be read."""
    if nesting_exceeds(body):
        raise RPCError(INVALID_REQUEST,
                       f"Invalid request: JSON is nested more than {MAX_DEPTH} levels deep")
    try:
        env = _decode(_envelope_decoder, body)
    except msgspec.ValidationError as exc:
        raise RPCError(INVALID_REQUEST, f"Invalid request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise RPCError(PARSE_ERROR, f"Parse error: {exc}") from None
    rid = None if env.id is msgspec.UNSET else env.id
    if isinstance(rid, bool) or (rid is not None and not isinstance(rid, (str, int, float))):
        raise RPCError(INVALID_REQUEST, "id must be a string, a number or null")
    if env.jsonrpc != "2.0":
        raise RPCError(INVALID_REQUEST, "jsonrpc must be 2.0", rid)
    if not isinstance(env.method, str) or not env.method:
        raise RPCError(INVALID_REQUEST, "method must be a non-empty string", rid)
    params = env.params
    if bytes(params) == b"null":
        params = msgspec.Raw(b"{}")
    elif bytes(params).lstrip().startswith(b"["):
        items = _decode(_one_param, params)
        if len(items) != 1:
            raise RPCError(INVALID_PARAMS, "params must be an object or an array of one object",
                           rid)
        params = items[0]
    return Request(method=env.method, params=params, id=env.id)


def decode_params(decoder: msgspec.json.Decoder[T], req: Request) -> T:
    """Decode a request's params into its method's struct; -32602 names the bad field."""
    try:
        return _decode(decoder, req.params)
    except msgspec.DecodeError as exc:
        where = str(exc).replace("`$", "`params")
        raise RPCError(INVALID_PARAMS, f"Invalid params: {where}") from None


def encode_result(rid: Any, result: Any) -> bytes:
    """Encode a successful response."""
    return _encoder.encode({"jsonrpc": "2.0", "result": result, "id": rid})


def encode_error(rid: Any, code: int, message: str, data: Any = None) -> bytes:
    """Encode an error response."""
    return _encoder.encode(
        {"jsonrpc": "2.0", "error": {"code": code, "message": message, "data": data}, "id": rid}
    )


def encode_request(method: str, params: Any, rid: int | None = None) -> tuple[int, bytes]:
    """Encode a request; returns the id used and the body. Raises
    :class:`RequestTooLarge` for a body no plugin of ours would read."""
    rid = next(_ids) if rid is None else rid
    body = _encoder.encode({"jsonrpc": "2.0", "method": method, "params": params, "id": rid})
    if len(body) > MAX_BODY:
        raise RequestTooLarge(INVALID_REQUEST, f"the request is {mebibytes(len(body))}, more "
                              f"than the {mebibytes(MAX_BODY)} a plugin accepts; not sent")
    return rid, body


_result_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def _result_decoder(result_type: type[T]) -> msgspec.json.Decoder[T]:
    decoder = _result_decoders.get(result_type)
    if decoder is None:
        decoder = _result_decoders[result_type] = msgspec.json.Decoder(result_type)
    return decoder


def decode_response(body: bytes, result_type: type[T], request_id: Any = None) -> T:
    """Decode a response body into ``result_type``, or raise the :class:`RPCError` it carries.

    With ``request_id``, a response that answers another request is refused.
    """
    try:
        resp = _decode(_response_decoder, body)
    except msgspec.DecodeError as exc:
        raise RPCError(PARSE_ERROR, f"malformed response from plugin: {exc}") from None
    if request_id is not None and resp.id is not None and resp.id != request_id:
        raise RPCError(INTERNAL_ERROR, f"the plugin answered request {resp.id!r} to request "
                                       f"{request_id!r}")
    if resp.error is not None:
        raise RPCError(resp.error.code, resp.error.message, resp.error.data)
    if not resp.result:
        raise RPCError(INVALID_REQUEST, "malformed response from plugin: no result and no error")
    try:
        return _result_decoder(result_type).decode(resp.result)
    except msgspec.DecodeError as exc:
        raise RPCError(INVALID_PARAMS, f"unexpected result from plugin: {exc}") from None
