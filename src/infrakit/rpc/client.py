"""Clients of a plugin socket: a sync one for the CLI and an async one for controllers.

Both share the envelope codec in :mod:`infrakit.rpc.jsonrpc` and the method tables of
:mod:`infrakit.spi`; the sync one uses only the standard library, and for a local plugin
not even :mod:`http.client` (:mod:`infrakit.rpc.unixhttp`), so the CLI starts fast.
Every call has a timeout. Errors: :class:`~infrakit.rpc.jsonrpc.RPCError` for an error the
plugin answered, :class:`PluginUnreachable` when no answer could be had.
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from infrakit.rpc import jsonrpc
from infrakit.rpc.paths import UntrustedPath, check_plugin_socket
from infrakit.rpc.unixhttp import UnixHTTPConnection, connect_unix
from infrakit.spi.access import ACTOR_HEADER, current_actor
from infrakit.spi.methods import Method
from infrakit.spi.types import mebibytes

if TYPE_CHECKING:
    import http.client
    import ssl

#: Called with each request and response body when set (``--log 5``). A hook rather than a
#: logger, so that the CLI's start-up does not pay for importing :mod:`logging`.
Trace = Callable[[str], None]

DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECTIONS = 100
"""Calls an async client has in flight at once; more wait for a connection."""
T = TypeVar("T")


class PluginUnreachable(ConnectionError):
    """The plugin's socket did not answer: it is not running, stale, or timed out."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"plugin at {path} is not reachable: {reason}")
        self.path = path
        self.reason = reason


class _Response(Protocol):
    @property
    def status(self) -> int: ...

    def read(self) -> bytes: ...


class _Connection(Protocol):
    """What the sync client uses of a connection: :class:`UnixHTTPConnection` to a local
    plugin, ``http.client.HTTPSConnection`` to a manager over TCP."""

    def request(self, method: str, url: str, body: bytes, headers: dict[str, str]) -> None: ...

    def getresponse(self) -> _Response: ...

    def close(self) -> None: ...


@functools.cache
def _unix_http_connection() -> Callable[[Path, float | None], http.client.HTTPConnection]:
    """``http.client``'s connection over a UNIX socket, made when first needed: the CLI's
    plain calls do without :mod:`http.client`, which is slow to import."""
    import http.client

    class UnixStreamConnection(http.client.HTTPConnection):
        def __init__(self, path: Path, timeout: float | None) -> None:
            super().__init__("h", timeout=timeout)
            self._path = os.fspath(path)

        def connect(self) -> None:
            self.sock = connect_unix(self._path, self.timeout)

    return UnixStreamConnection


_HEADERS = {"Content-Type": "application/json"}


def _trusted(path: Path) -> None:
    """Send nothing to a socket another user owns or could have planted: see
    :func:`~infrakit.rpc.paths.check_plugin_socket`."""
    try:
        check_plugin_socket(path)
    except UntrustedPath as exc:
        raise PluginUnreachable(path, str(exc)) from None


def _check_status(status: int, body: bytes) -> None:
    """A JSON-RPC server answers 200 even for errors; anything else refused the request
    at the HTTP level (413 for a body over the plugin's limit, for instance)."""
    if status == 413:
        limit = re.search(rb"larger than ([0-9]{1,20}) bytes", body[:200])
        raise jsonrpc.RPCError(jsonrpc.INVALID_REQUEST, "the plugin refused the request: it is "
                               + (f"larger than {mebibytes(int(limit[1]))}" if limit
                                  else "too large") + " (HTTP 413)")
    if status != 200:
        text = body[:200].decode(errors="replace").strip()
        raise jsonrpc.RPCError(jsonrpc.INVALID_REQUEST,
                               f"the plugin refused the request: HTTP {status}: {text}")


@dataclass(frozen=True)
class Remote:
    """A plugin served over TCP: only with TLS, and only to a caller with its token."""

    url: str
    """``https://HOST:PORT/``"""
    ssl: ssl.SSLContext
    """Verifies the server's certificate."""
    token: str


class RPCClient:
    """A keep-alive JSON-RPC client on one UNIX socket (or on ``remote``), using only the
    standard library."""

    def __init__(self, path: Path | str, timeout: float = DEFAULT_TIMEOUT,
                 trace: Trace | None = None, remote: Remote | None = None) -> None:
        if remote is None:
            self.path = Path(path)
        else:
            from urllib.parse import urlsplit

            self.path = Path(urlsplit(remote.url).netloc)
        self.timeout = timeout
        self.trace = trace
        self.remote = remote
        self._headers = _HEADERS if remote is None else {
            **_HEADERS, "Authorization": f"Bearer {remote.token}"}
        self._conn: _Connection | None = None
        self.unbatched: set[str] = set()
        """Batch methods the plugin answered "method not found" to."""

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> RPCClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def call_raw(self, method: str, params: Any, result_type: type[T]) -> T:
        """Call ``method`` with ``params`` (a struct or a dict) and decode the result."""
        rid, body = jsonrpc.encode_request(method, params)
        if self.trace:
            self.trace(f"-> {self.path.name} {body.decode(errors='replace')}")
        answer = self._post(body)
        if self.trace:
            self.trace(f"<- {self.path.name} {answer.decode(errors='replace')}")
        return jsonrpc.decode_response(answer, result_type, rid)

    def call(self, method: Method[Any, Any], type_name: str | None, *args: Any) -> Any:
        """Call a method of an interface table and return its unwrapped value."""
        result = self.call_raw(method.wire, method.build(type_name, args), method.result)
        return method.unwrap(result)

    def call_each(self, method: Method[Any, Any], type_name: str | None,
                  *args: Any) -> list[Any]:
        """Call a batch method: one value per item, or the exception that item met. A
        plugin that does not serve the batch method gets one call of the one-item method
        per item instead, one after the other, and is remembered as such."""
        if _try_batch(self.unbatched, method):
            try:
                return cast(list[Any], self.call(method, type_name, *args))
            except jsonrpc.RPCError as exc:
                _unbatched(self.unbatched, method, exc)
        answers: list[Any] = []
        for item in _items(method, type_name, args):
            try:
                answers.append(self.call(cast(Method[Any, Any], method.single), type_name,
                                         *item))
            except (jsonrpc.RPCError, PluginUnreachable) as exc:
                answers.append(exc)
        return method.lifted(answers)

    def _connect(self) -> _Connection:
        if self.remote is None:
            _trusted(self.path)
            return UnixHTTPConnection(self.path, self.timeout)
        return self.connection(self.timeout)

    def connection(self, timeout: float | None) -> http.client.HTTPConnection:
        """A new ``http.client`` connection to the plugin (not yet open), whose answers are
        read as they come (an event stream), with ``timeout`` on each read (None: a
        stream's reads wait as long as it is quiet). Refuses an untrusted socket."""
        import http.client

        if self.remote is None:
            _trusted(self.path)
            return _unix_http_connection()(self.path, timeout)
        from urllib.parse import urlsplit

        url = urlsplit(self.remote.url)
        return http.client.HTTPSConnection(url.hostname or "", url.port or 443,
                                           timeout=timeout, context=self.remote.ssl)

    def _early_answer(self) -> tuple[int, bytes] | None:
        """The answer a server sent before it stopped reading the request (a 413 for a
        body over its limit), when sending the rest failed; None if there is none."""
        try:
            assert self._conn is not None
            resp = self._conn.getresponse()
            return resp.status, resp.read()
        except Exception:  # whatever stops the reading (http.client's own errors too): none
            return None

    def _post(self, body: bytes) -> bytes:
        reused = self._conn is not None
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = self._connect()
            try:
                self._conn.request("POST", "/", body, self._headers)
                resp = self._conn.getresponse()
                data = resp.read()
            # http.client.RemoteDisconnected is a ConnectionResetError
            except (BrokenPipeError, ConnectionResetError) as exc:
                early = self._early_answer()
                self.close()
                if early is not None:  # it refused the request before reading it all
                    _check_status(*early)
                if reused and attempt == 1:
                    continue  # the server closed an idle keep-alive connection; retry once
                raise PluginUnreachable(self.path, str(exc) or type(exc).__name__) from None
            except TimeoutError:
                self.close()
                raise PluginUnreachable(self.path, f"no answer within {self.timeout:g}s") from None
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                self.close()
                raise PluginUnreachable(self.path, exc.strerror or str(exc)) from None
            except OSError as exc:
                self.close()
                raise PluginUnreachable(self.path, str(exc)) from None
            _check_status(resp.status, data)
            return data
        raise AssertionError("unreachable")


class AsyncRPCClient:
    """The same client for asyncio code, over aiohttp; create it inside a running loop.
    It talks to the UNIX socket ``path``, or to ``remote`` when one is given, over at most
    ``connections`` connections at once (0: as many as there are calls)."""

    def __init__(self, path: Path | str, timeout: float = DEFAULT_TIMEOUT,
                 remote: Remote | None = None,
                 connections: int = DEFAULT_CONNECTIONS, forwards: bool = False) -> None:
        """``forwards``: each call is made on behalf of the caller of the call being
        served (a manager forwarding to its leader), and names it to the plugin."""
        import aiohttp

        self.path = Path(path) if remote is None else remote.url
        self._socket = Path(path) if remote is None else None
        from infrakit.rpc.metrics import STATS  # not on the CLI's path: it logs

        self._stats = STATS
        self.label = Path(path).name if remote is None else remote.url
        """The plugin, as the metrics of the calls made to it name it."""
        self.timeout = timeout
        self.forwards = forwards
        self.unbatched: set[str] = set()
        """Batch methods the plugin answered "method not found" to."""
        connector: aiohttp.BaseConnector
        if remote is None:
            connector = aiohttp.UnixConnector(path=os.fspath(path), limit=connections)
            self._url, self._headers = "http://h/", _HEADERS
        else:
            connector = aiohttp.TCPConnector(ssl=remote.ssl, limit=connections)
            self._url = remote.url
            self._headers = {**_HEADERS, "Authorization": f"Bearer {remote.token}"}
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=timeout))

    async def close(self) -> None:
        await self._session.close()

    async def __aenter__(self) -> AsyncRPCClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def call_raw(self, method: str, params: Any, result_type: type[T]) -> T:
        """Call ``method`` with ``params`` (a struct or a dict) and decode the result."""
        import aiohttp

        if self._socket is not None:
            _trusted(self._socket)
        rid, body = jsonrpc.encode_request(method, params)
        started = time.perf_counter()
        try:
            headers = self._headers
            if self.forwards and (caller := current_actor()) is not None:
                headers = {**headers, ACTOR_HEADER: caller.name}
            async with self._session.post(self._url, data=body, headers=headers) as resp:
                data = await resp.read()
                status = resp.status
        except TimeoutError:
            self._stats.made(self.label, method, False, time.perf_counter() - started)
            raise PluginUnreachable(self.path, f"no answer within {self.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            self._stats.made(self.label, method, False, time.perf_counter() - started)
            raise PluginUnreachable(self.path, str(exc)) from None
        self._stats.made(self.label, method, True, time.perf_counter() - started)
        _check_status(status, data)
        return jsonrpc.decode_response(data, result_type, rid)

    async def call(self, method: Method[Any, Any], type_name: str | None, *args: Any) -> Any:
        """Call a method of an interface table and return its unwrapped value."""
        result = await self.call_raw(method.wire, method.build(type_name, args), method.result)
        return method.unwrap(result)

    async def call_each(self, method: Method[Any, Any], type_name: str | None,
                        *args: Any) -> list[Any]:
        """Call a batch method: one value per item, or the exception that item met. A
        plugin that does not serve the batch method (the reference's, say) gets one call of
        the one-item method per item instead, all at once, and is remembered as such."""
        if _try_batch(self.unbatched, method):
            try:
                return cast(list[Any], await self.call(method, type_name, *args))
            except jsonrpc.RPCError as exc:
                _unbatched(self.unbatched, method, exc)
        import asyncio

        calls = [self.call(cast(Method[Any, Any], method.single), type_name, *item)
                 for item in _items(method, type_name, args)]
        return method.lifted(list(await asyncio.gather(*calls, return_exceptions=True)))


def _try_batch(unbatched: set[str], method: Method[Any, Any]) -> bool:
    """Whether to send the batch method itself: not to a plugin known to lack it."""
    assert method.single is not None and method.items is not None, method.wire
    return method.wire not in unbatched


def _unbatched(unbatched: set[str], method: Method[Any, Any], exc: jsonrpc.RPCError) -> None:
    """Remember a plugin that lacks the batch method; re-raise any other error."""
    if not exc.method_not_found:
        raise exc
    unbatched.add(method.wire)


def _items(method: Method[Any, Any], type_name: str | None,
           args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """The one-item method's arguments, per item of a batch call."""
    assert method.items is not None
    return method.items(method.build(type_name, args))
