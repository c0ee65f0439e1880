"""A private EC2 endpoint for the tests and the benchmark of the cloud instance plugins.

``moto``'s server runs as its own process on a free loopback port, with its checks of AMIs
and instance types on, so a bad image or type is refused as EC2 refuses it. In front of it
:class:`Proxy`, a small HTTP server on loopback too, forwards every call and can play two
parts of the real EC2 that moto does not: an instance that stays out of DescribeInstances
for a while after RunInstances returned it (eventual consistency), and throttling
(``RequestLimitExceeded`` for a share of the calls). It also counts the calls by action.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.helpers import stop_process

START_TIMEOUT = 30.0
LIVE = ["pending", "running"]
REGION = "us-east-1"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIDMOTO0TESTING0KEY",
                    "AWS_SECRET_ACCESS_KEY": "moto-secret-d41d8cd98f00b204"}
"""Distinctive, so that a test can tell they appear nowhere the plugin writes."""
#: The AWS settings that must not leak in from the caller's environment.
AWS_VARIABLES = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN",
                 "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_EC2", "AWS_REGION",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN")


def moto_problem() -> str | None:
    """Why a moto server cannot run here, or None."""
    for module in ("moto.server", "flask", "werkzeug"):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            return f"{module} is not installed (pip install 'moto[server]')"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def aws_environment(endpoint: str) -> dict[str, str]:
    """The environment a plugin (or a test's own client) needs to reach ``endpoint`` with
    fake credentials, and nothing else: no instance metadata service, no shared files."""
    return {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


@dataclass
class MotoServer:
    """A running moto server."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def reset(self) -> None:
        """Forget every resource (moto's own reset call)."""
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        try:
            conn.request("POST", "/moto-api/reset")
            conn.getresponse().read()
        finally:
            conn.close()


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=2)
    try:
        conn.request("GET", "/moto-api/data.json")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@contextlib.contextmanager
def moto_server() -> Iterator[MotoServer]:
    """Start ``python -m moto.server`` on a free loopback port; stop it at the end."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="moto", suffix=".log")[1])
    env = {**os.environ, "MOTO_ENABLE_AMI_VALIDATION": "true",
           "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                 "-p", str(port)], env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(url):
            if proc.poll() is not None:
                raise RuntimeError(f"moto exited with {proc.returncode}:\n"
                                   f"{log.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto did not answer in {START_TIMEOUT:g} s")
            time.sleep(0.05)
        yield MotoServer(url, proc, log)
    finally:
        stop_process(proc)
        log.unlink(missing_ok=True)


THROTTLED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
             b"<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
             b"</Error></Errors><RequestID>throttled</RequestID></Response>")

NOT_FOUND = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
             b"<Code>InvalidInstanceID.NotFound</Code><Message>The instance ID '%s' does "
             b"not exist</Message></Error></Errors><RequestID>unknown</RequestID></Response>")


@dataclass
class Proxy:
    """What the proxy does; tests change it while it runs."""

    upstream: str
    hide_for: float = 0.0
    """Seconds an instance stays out of DescribeInstances after RunInstances made it."""
    unknown_for: float = 0.0
    """Seconds CreateTags and TerminateInstances answer InvalidInstanceID.NotFound for an
    instance after RunInstances made it, as EC2 may."""
    throttle_every: int = 0
    """Answer every n-th call with RequestLimitExceeded (2: half the calls); 0: none."""
    calls: Counter[str] = field(default_factory=Counter)
    """Calls by action, throttled ones included."""
    throttled: int = 0
    hidden: int = 0
    """Instances left out of DescribeInstances answers so far."""
    unknowns: int = 0
    """Calls answered InvalidInstanceID.NotFound so far."""
    born: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def reset_counts(self) -> None:
        with self.lock:
            self.calls.clear()
            self.throttled = self.hidden = 0

    def _admit(self, action: str) -> bool:
        """Count the call; whether it goes through (else it is throttled)."""
        with self.lock:
            self.calls[action] += 1
            total = sum(self.calls.values())
            if self.throttle_every and total % self.throttle_every == 0:
                self.throttled += 1
                return False
            return True

    def _seen_launch(self, body: bytes) -> None:
        now = time.monotonic()
        root = ET.fromstring(body)
        with self.lock:
            for iid in root.findall(".//{*}instanceId"):
                self.born[iid.text or ""] = now

    def unknown(self, body: bytes) -> str | None:
        """An instance the request names that EC2 does not know yet, if any."""
        form = parse_qs(body.decode(errors="replace"))
        named = [v for k, vs in form.items() if k.startswith(("InstanceId.", "ResourceId."))
                 for v in vs]
        now = time.monotonic()
        with self.lock:
            young = next((i for i in named if now - self.born.get(i, -1e9) < self.unknown_for),
                         None)
            self.unknowns += young is not None
            return young

    def _hide_young(self, body: bytes) -> bytes:
        """The DescribeInstances answer without the instances made too recently."""
        root = ET.fromstring(body)
        now = time.monotonic()
        with self.lock:
            young = {i for i, t in self.born.items() if now - t < self.hide_for}
        if not young:
            return body
        hidden = 0
        for rset in root.findall(".//{*}reservationSet"):
            for reservation in list(rset):
                for iset in reservation.findall("{*}instancesSet"):
                    for item in list(iset):
                        if item.findtext("{*}instanceId") in young:
                            iset.remove(item)
                            hidden += 1
                    if len(iset) == 0:
                        rset.remove(reservation)
        with self.lock:
            self.hidden += hidden
        namespace = root.tag[1:].partition("}")[0]
        ET.register_namespace("", namespace)
        answer: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
        return answer


def _handler(proxy: Proxy) -> type[BaseHTTPRequestHandler]:
    upstream = urlsplit(proxy.upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the tests read the counts instead."""

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            action = (parse_qs(body.decode(errors="replace")).get("Action") or ["?"])[0]
            if not proxy._admit(action):
                self._answer(503, {"Content-Type": "text/xml"}, THROTTLED)
                return
            unknown = (proxy.unknown(body) if proxy.unknown_for and action in
                       ("CreateTags", "TerminateInstances") else None)
            if unknown is not None:
                self._answer(400, {"Content-Type": "text/xml"}, NOT_FOUND % unknown.encode())
                return
            conn = http.client.HTTPConnection(upstream.hostname or "", upstream.port,
                                              timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "keep-alive")}
                conn.request(self.command, self.path, body, headers)
                resp = conn.getresponse()
                data = resp.read()
                status = resp.status
                kept = {k: v for k, v in resp.getheaders()
                        if k.lower() in ("content-type", "x-amzn-requestid")}
            finally:
                conn.close()
            if status == 200 and action == "RunInstances":
                proxy._seen_launch(data)
            if status == 200 and action == "DescribeInstances" and proxy.hide_for > 0:
                data = proxy._hide_young(data)
            self._answer(status, kept, data)

        def _answer(self, status: int, headers: dict[str, str], data: bytes) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_POST = do_GET = _forward

    return Handler


@contextlib.contextmanager
def ec2_proxy(upstream: str) -> Iterator[Proxy]:
    """A :class:`Proxy` in front of ``upstream``, on a free loopback port."""
    proxy = Proxy(upstream)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(proxy))
    server.daemon_threads = True
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="ec2-proxy", daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def moto_client(url: str) -> Any:
    """A boto3 EC2 client of ``url`` with the fake credentials, whatever the environment."""
    import boto3

    env = aws_environment(url)
    return boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"]).client("ec2", endpoint_url=url)


def tags_of(instance: dict[str, Any]) -> dict[str, str]:
    """An EC2 instance's tags, from DescribeInstances' list of pairs."""
    return {t["Key"]: t["Value"] for t in instance.get("Tags") or []}


def list_instances(api: Any, tags: dict[str, str] | None = None,
                   states: list[str] | None = None) -> list[dict[str, Any]]:
    """What EC2 (a boto3 client of moto itself) holds with ``tags``, in ``states``."""
    filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in (tags or {}).items()]
    filters.append({"Name": "instance-state-name", "Values": states or LIVE})
    pages = api.get_paginator("describe_instances").paginate(Filters=filters)
    return [i for p in pages for r in p["Reservations"] for i in r["Instances"]]
