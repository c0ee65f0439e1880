"""A client of an etcd v3 cluster through its JSON gateway (with ``etcd3gw``): the calls,
the parts of a transaction, and the fence that keeps a manager whose term ended from writing.

The group store (:mod:`infrakit.store.etcd`) and the leadership
(:mod:`infrakit.manager.etcd_leader`) are both built on it, each with its own client: the
leadership's answers within a quarter of the lease's TTL, so that a renewal that hangs is
noticed in time.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from infrakit.spi.errors import PluginError

TXN_OPS = 100
"""Operations per transaction, under etcd's default cap of 128."""


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def put(key: str, value: str | bytes) -> dict[str, Any]:
    return {"request_put": {"key": b64(key), "value": b64(value)}}


def delete(key: str) -> dict[str, Any]:
    return {"request_delete_range": {"key": b64(key)}}


def created_at(key: str, revision: int) -> dict[str, Any]:
    """Compare: ``key`` was created at ``revision`` (0: it does not exist)."""
    return {"key": b64(key), "result": "EQUAL", "target": "CREATE",
            "create_revision": str(revision)}


def unchanged(key: str, revision: int) -> dict[str, Any]:
    """Compare: ``key`` is as it was read at ``revision`` (0: it still does not exist)."""
    return {"key": b64(key), "result": "EQUAL", "target": "MOD",
            "mod_revision": str(revision)}


def exists(key: str) -> dict[str, Any]:
    """Compare: ``key`` exists."""
    return {"key": b64(key), "result": "GREATER", "target": "VERSION", "version": "0"}


def prefix_end(prefix: str) -> str:
    """The first key after every key under ``prefix``."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return raw.decode()


class EtcdClient:
    """Calls to the first member of a cluster that answers, each within ``timeout``."""

    def __init__(self, endpoints: Iterable[str], timeout: float = 5.0) -> None:
        import etcd3gw

        self._clients = []
        for endpoint in endpoints:
            url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
            if url.hostname is None:
                raise PluginError(f"etcd: {endpoint!r} is not an endpoint URL")
            self._clients.append(etcd3gw.client(host=url.hostname, port=url.port or 2379,
                                                protocol=url.scheme, timeout=timeout))
        if not self._clients:
            raise PluginError("etcd: no endpoint given")
        self._current = 0
        """The member calls go to, until it cannot be reached; then the next one."""
        self._fence: tuple[str, int] | None = None
        """The leader key and the create revision it must still have for a write."""

    def fence_on(self, key: str, revision: int) -> None:
        """From now on, write only while ``key`` is the one created at ``revision`` (the
        leader key of this manager's term): a manager that lost its term writes nothing,
        so it cannot leave in-flight records that a new leader would wait for."""
        self._fence = (key, revision)

    def close(self) -> None:
        for client in self._clients:
            client.session.close()

    def call(self, path: str, request: dict[str, Any]) -> dict[str, Any]:
        """One call of the gateway, to the first member that answers; its faults become a
        :class:`PluginError` naming etcd. (A call cut off by a member's death may have been
        applied: every write here is idempotent or compares a revision, so a retry is safe.)"""
        from etcd3gw.exceptions import (
            ConnectionFailedError,
            ConnectionTimeoutError,
            Etcd3Exception,
        )

        for _ in self._clients:  # a member that cannot be reached: try the next one
            client = self._clients[self._current]
            try:
                answer: dict[str, Any] = client.post(client.get_url(path), json=request)
                return answer
            except (ConnectionFailedError, ConnectionTimeoutError) as exc:
                failed = f"etcd at {client.base_url}: {exc.detail_text or exc}"
                self._current = (self._current + 1) % len(self._clients)
            except Etcd3Exception as exc:
                raise PluginError(f"etcd at {client.base_url}: {exc.detail_text or exc}"
                                  ) from None
        raise PluginError(f"no etcd member answers; the last: {failed}")

    def get_range(self, key: str, prefix: bool = False, end: str | None = None,
                  keys_only: bool = False) -> list[dict[str, Any]]:
        """The key-values at ``key``, or under it with ``prefix``, or from it up to, not
        including, ``end``; with ``keys_only``, without their values."""
        request: dict[str, Any] = {"key": b64(key), "keys_only": keys_only}
        if prefix:
            request["range_end"] = b64(prefix_end(key))
        elif end is not None:
            request["range_end"] = b64(end)
        kvs: list[dict[str, Any]] = self.call("/kv/range", request).get("kvs", [])
        return kvs

    def get_prefix(self, prefix: str) -> dict[str, bytes]:
        """Every key under ``prefix``, without it, to its value."""
        return {base64.b64decode(kv["key"]).decode()[len(prefix):]:
                base64.b64decode(kv.get("value", "")) for kv in self.get_range(prefix, True)}

    def get_keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, without it (their values are not read)."""
        return [base64.b64decode(kv["key"]).decode()[len(prefix):]
                for kv in self.get_range(prefix, True, keys_only=True)]

    def get_between(self, start: str, end: str, strip: str) -> dict[str, bytes]:
        """Every key from ``start`` up to, not including, ``end``, without the leading
        ``strip``, to its value."""
        return {base64.b64decode(kv["key"]).decode()[len(strip):]:
                base64.b64decode(kv.get("value", "")) for kv in self.get_range(start, end=end)}

    def get_value(self, key: str) -> tuple[bytes | None, int]:
        """A key's value and its mod revision (0 when it does not exist)."""
        kvs = self.get_range(key)
        if not kvs:
            return None, 0
        return base64.b64decode(kvs[0].get("value", "")), int(kvs[0]["mod_revision"])

    def created_revision(self, key: str) -> int:
        """The revision at which ``key`` was created (0 when it does not exist)."""
        kvs = self.get_range(key)
        return int(kvs[0]["create_revision"]) if kvs else 0

    def txn(self, success: list[dict[str, Any]],
            compare: Iterable[dict[str, Any]] = (),
            fence: list[tuple[str, int]] | None = None) -> bool:
        """Apply ``success`` if every ``compare`` (and the fence) holds; False when a
        compare failed, an error when the fence did. ``fence`` replaces the client's own:
        the keys, each with the create revision it must still have (0: must not exist),
        that let a manager sharing groups write for one group."""
        fences = fence if fence is not None else [self._fence] if self._fence else []
        answer = self.call("/kv/txn", {"compare": [*compare, *(created_at(*f) for f in fences)],
                                       "success": success, "failure": []})
        if answer.get("succeeded", False):
            return True
        if any(self.created_revision(key) != revision for key, revision in fences):
            raise PluginError("etcd: this manager no longer leads; nothing was written")
        return False
