"""A real S3 server on loopback for the object-store tests: moto's ``ThreadedMotoServer`` on
127.0.0.1 with authentication on (an IAM user's key is the only one accepted, so a wrong secret
is refused as AWS refuses it), and a small proxy in front of it that counts requests and can
answer chosen requests with an error (a failing store, opened and closed by the test).

Import the fixtures into a test module: ``from tests.s3server import s3, s3_env  # noqa: F401``.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

REGION = "us-east-1"


@dataclass
class Faults:
    """Which requests the proxy refuses: methods (PUT, POST, ...) and how many (None: all)."""

    methods: set[str] = field(default_factory=set)
    status: int = 503
    left: int | None = None
    #: Matching requests let through before the faults start.
    skip: int = 0
    #: Only requests whose path contains this (e.g. ".png": the uploads, not the probe or marker).
    match: str = ""


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: tuple[str, int]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream
        self.faults = Faults()
        self.log: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Proxy
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        body = self._body()
        with self.server.lock:
            f = self.server.faults
            fail = self.command in f.methods and f.match in self.path and (f.left is None or f.left > 0)
            if fail and f.skip > 0:
                f.skip, fail = f.skip - 1, False
            elif fail and f.left is not None:
                f.left -= 1
        if fail:
            code = {500: "InternalError", 501: "NotImplemented", 503: "ServiceUnavailable"}.get(f.status, "Error")
            payload = f"<Error><Code>{code}</Code><Message>injected by the test</Message></Error>".encode()
            self.send_response(f.status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            self.server.log.append((self.command, self.path, f.status))
            return
        conn = http.client.HTTPConnection(*self.server.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
        headers["Content-Length"] = str(len(body))
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "content-length", "connection", "server", "date"):
                self.send_header(k, v)
        self.send_header("Content-Length", resp.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()
        self.server.log.append((self.command, self.path, resp.status))

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


@dataclass
class S3:
    """The server as a test sees it."""

    url: str  # through the proxy: what manifests name
    direct: str  # moto itself
    key_id: str
    secret: str
    proxy: _Proxy

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.direct, region_name=REGION, aws_access_key_id=self.key_id,
                            aws_secret_access_key=self.secret)

    def new_bucket(self) -> str:
        name = f"b-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> dict[str, dict[str, Any]]:
        """Every object under ``prefix``: key -> its listing entry."""
        out: dict[str, dict[str, Any]] = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", ()):
                out[obj["Key"]] = obj
        return out

    def head(self, bucket: str, key: str) -> dict[str, Any]:
        return self.client().head_object(Bucket=bucket, Key=key)

    def fail(self, *methods: str, count: int | None = None, status: int = 503, skip: int = 0, match: str = "") -> None:
        with self.proxy.lock:
            self.proxy.faults = Faults(set(methods), status, count, skip, match)

    def heal(self) -> None:
        self.fail()

    def requests(self) -> list[tuple[str, str, int]]:
        return list(self.proxy.log)

    def output(self, bucket: str, prefix: str = "out/") -> dict[str, Any]:
        return {"dir": f"s3://{bucket}/{prefix}", "s3": {"endpoint_url": self.url, "region": REGION}}


#: The one server of the session: the fixture is imported into several modules (each import
#: is a fixture of its own to pytest), and moto's authentication switch is process-wide.
_STARTED: list[S3] = []


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3]:
    if _STARTED:
        yield _STARTED[0]
        return
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    direct = f"http://{host}:{port}"
    import boto3

    iam = boto3.client("iam", endpoint_url=direct, region_name=REGION, aws_access_key_id="setup",
                       aws_secret_access_key="setup")
    iam.create_user(UserName="batchfuse-test")
    iam.put_user_policy(UserName="batchfuse-test", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    ))
    key = iam.create_access_key(UserName="batchfuse-test")["AccessKey"]
    # from here on only that key is accepted, and only with its secret
    urllib.request.urlopen(urllib.request.Request(
        f"{direct}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
    )).read()
    proxy = _Proxy((host, port))
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    _STARTED.append(S3(f"http://127.0.0.1:{proxy.server_address[1]}", direct, key["AccessKeyId"],
                       key["SecretAccessKey"], proxy))
    try:
        yield _STARTED[0]
    finally:
        _STARTED.clear()
        proxy.shutdown()
        proxy.server_close()
        server.stop()


@pytest.fixture
def s3(s3_server: S3, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[S3]:
    """The server, the test's credentials in the environment (and nothing from this machine's
    ~/.aws or an instance role), the proxy healed and its log cleared."""
    s3_env(monkeypatch, tmp_path, s3_server.key_id, s3_server.secret)
    s3_server.heal()
    s3_server.proxy.log.clear()
    yield s3_server
    s3_server.heal()


def s3_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, key_id: str | None, secret: str | None) -> None:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                 "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role lookup off loopback
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")  # a failing store gives up quickly
    if key_id is not None:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    if secret is not None:
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
