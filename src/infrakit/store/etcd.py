"""The group store across machines: etcd (v3, through its JSON gateway, with ``etcd3gw``).

Keys, under a prefix (default ``/infrakit/``)::

    spec/<group>        the committed spec (JSON, as committed)
    previous/<group>    the spec committed before it
    paused/<group>      "1" while an operator has paused the rolling update
    sequence/<group>    the last member sequence number handed out
    inflight/<key>      an in-flight record (JSON)

Every change that must be atomic is one etcd transaction; a read-modify-write (the previous
spec, the sequence) compares the revision it read and retries if another writer came in
between. etcd caps the operations of one transaction (128 by default), so recording many
in-flight records takes one transaction per 100: each is durable before the controller
acts, and a crash between two leaves records that only delay, never duplicate.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import msgspec

from infrakit.plugins.group.storage import InFlight
from infrakit.spi.errors import PluginError

_decode = msgspec.json.Decoder(InFlight).decode
TXN_OPS = 100
"""Operations per transaction, under etcd's default cap of 128."""


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _put(key: str, value: str | bytes) -> dict[str, Any]:
    return {"request_put": {"key": b64(key), "value": b64(value)}}


def _delete(key: str, prefix: bool = False) -> dict[str, Any]:
    request: dict[str, Any] = {"key": b64(key)}
    if prefix:
        request["range_end"] = b64(_prefix_end(key))
    return {"request_delete_range": request}


def created_at(key: str, revision: int) -> dict[str, Any]:
    """Compare: ``key`` was created at ``revision`` (0: it does not exist)."""
    return {"key": b64(key), "result": "EQUAL", "target": "CREATE",
            "create_revision": str(revision)}


def _prefix_end(prefix: str) -> bytes:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return bytes(raw)


class EtcdStore:
    """A :class:`~infrakit.plugins.group.storage.GroupStore` in etcd, shared by every manager."""

    def __init__(self, endpoints: list[str], prefix: str = "/infrakit/",
                 timeout: float = 5.0) -> None:
        import etcd3gw

        if not endpoints:
            raise PluginError("etcd: no endpoint given")
        self._clients = []
        for endpoint in endpoints:
            url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
            if url.hostname is None:
                raise PluginError(f"etcd: {endpoint!r} is not an endpoint URL")
            self._clients.append(etcd3gw.client(host=url.hostname, port=url.port or 2379,
                                                protocol=url.scheme, timeout=timeout))
        self._current = 0
        """The member calls go to, until it cannot be reached; then the next one."""
        self.prefix = prefix
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

    # -- raw access -----------------------------------------------------------------------

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

    def get_range(self, key: str, prefix: bool = False) -> list[dict[str, Any]]:
        request: dict[str, Any] = {"key": b64(key)}
        if prefix:
            request["range_end"] = b64(_prefix_end(key))
        kvs: list[dict[str, Any]] = self.call("/kv/range", request).get("kvs", [])
        return kvs

    def get_value(self, key: str) -> tuple[bytes | None, int]:
        """A key's value and its mod revision (0 when it does not exist)."""
        kvs = self.get_range(key)
        if not kvs:
            return None, 0
        return base64.b64decode(kvs[0].get("value", "")), int(kvs[0]["mod_revision"])

    def _txn(self, success: list[dict[str, Any]],
             compare: Iterable[dict[str, Any]] = ()) -> bool:
        """Apply ``success`` if every ``compare`` (and the fence) holds; False when a
        compare failed, an error when the fence did."""
        fence = [] if self._fence is None else [created_at(*self._fence)]
        answer = self.call("/kv/txn", {"compare": [*compare, *fence],
                                       "success": success, "failure": []})
        if answer.get("succeeded", False):
            return True
        if self._fence is not None and self.created_revision(self._fence[0]) != self._fence[1]:
            raise PluginError("etcd: this manager no longer leads; nothing was written")
        return False

    def created_revision(self, key: str) -> int:
        """The revision at which ``key`` was created (0 when it does not exist)."""
        kvs = self.get_range(key)
        return int(kvs[0]["create_revision"]) if kvs else 0

    def _unchanged(self, key: str, revision: int) -> dict[str, Any]:
        """Compare: ``key`` is as it was read at ``revision`` (0: it still does not exist)."""
        return {"key": b64(key), "result": "EQUAL", "target": "MOD",
                "mod_revision": str(revision)}

    # -- GroupStore ------------------------------------------------------------------------

    def load_groups(self) -> dict[str, bytes]:
        head = f"{self.prefix}spec/"
        return {base64.b64decode(kv["key"]).decode()[len(head):]:
                base64.b64decode(kv.get("value", "")) for kv in self.get_range(head, prefix=True)}

    def save_group(self, group: str, spec: bytes) -> None:
        key = f"{self.prefix}spec/{group}"
        while True:
            current, revision = self.get_value(key)
            success = [_put(key, spec)]
            if current is not None and current != spec:
                success.append(_put(f"{self.prefix}previous/{group}", current))
            if self._txn(success, [self._unchanged(key, revision)]):
                return

    def previous_spec(self, group: str) -> bytes | None:
        return self.get_value(f"{self.prefix}previous/{group}")[0]

    def set_paused(self, group: str, paused: bool) -> None:
        self._txn([_put(f"{self.prefix}paused/{group}", "1" if paused else "0")])

    def paused(self, group: str) -> bool:
        return self.get_value(f"{self.prefix}paused/{group}")[0] == b"1"

    def delete_group(self, group: str) -> None:
        ops = [_delete(f"{self.prefix}{part}/{group}")
               for part in ("spec", "previous", "paused", "sequence")]
        keys = [op.key for op in self.inflight(group)]
        self._txn(ops + [_delete(self._inflight_key(k)) for k in keys[:TXN_OPS - len(ops)]])
        self.forget(*keys[TXN_OPS - len(ops):])

    def _inflight_key(self, key: str) -> str:
        return f"{self.prefix}inflight/{key}"

    def inflight(self, group: str) -> list[InFlight]:
        ops = (_decode(base64.b64decode(kv.get("value", "")))
               for kv in self.get_range(f"{self.prefix}inflight/", prefix=True))
        return [op for op in ops if op.group == group]

    def record(self, *ops: InFlight) -> None:
        for start in range(0, len(ops), TXN_OPS):
            self._txn([_put(self._inflight_key(op.key), msgspec.json.encode(op))
                       for op in ops[start:start + TXN_OPS]])

    def forget(self, *keys: str) -> None:
        for start in range(0, len(keys), TXN_OPS):
            self._txn([_delete(self._inflight_key(k)) for k in keys[start:start + TXN_OPS]])

    def reserve_sequences(self, group: str, count: int) -> int:
        spec = f"{self.prefix}spec/{group}"
        key = f"{self.prefix}sequence/{group}"
        while True:
            if self.get_value(spec)[0] is None:
                return 0  # no group, no sequence
            current, revision = self.get_value(key)
            last = int(current or b"0")
            exists = {"key": b64(spec), "result": "GREATER", "target": "VERSION",
                      "version": "0"}
            if self._txn([_put(key, str(last + count))],
                         [self._unchanged(key, revision), exists]):
                return last + 1
