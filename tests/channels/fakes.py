"""Local fake provider endpoints: a threaded HTTP server that records each request and answers through a
handler, plus independent re-implementations of the providers' request signatures (written from the
providers' specifications, not taken from their SDKs), so a fake accepts exactly what the real API would."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit


@dataclass
class Request:
    method: str
    path: str
    raw_query: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.raw_query, keep_blank_values=True))

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Response:
    status: int = 200
    body: Any = field(default_factory=dict)  # dict / list -> JSON; bytes as is
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Response]


class FakeServer:
    """An HTTP server on 127.0.0.1 (a free port) that hands every request to `handler`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.errors: list[str] = []  # assertion failures inside the handler (the test checks it is empty)
        outer = self

        class _H(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                req = Request(
                    self.command,
                    parts.path,
                    parts.query,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                )
                outer.requests.append(req)
                try:
                    resp = outer.handler(req)
                except AssertionError as e:
                    outer.errors.append(str(e))
                    resp = Response(400, {"fake_error": str(e)})
                body = resp.body if isinstance(resp.body, bytes) else json.dumps(resp.body).encode()
                self.send_response(resp.status)
                headers = {"Content-Type": "application/json", **resp.headers}
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self.port = self._server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def serve(handler: Handler) -> Iterator[FakeServer]:
    with FakeServer(handler) as server:
        yield server


def closed_port() -> int:
    """A local port nothing listens on (connections are refused at once)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


# ---- Aliyun OpenAPI signature V3 (ACS3-HMAC-SHA256) ---------------------------------------------------

_ACS3 = re.compile(r"^ACS3-HMAC-SHA256 Credential=([^,]+),SignedHeaders=([^,]+),Signature=([0-9a-f]{64})$")
_ACS3_REQUIRED = {
    "host",
    "x-acs-action",
    "x-acs-content-sha256",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-version",
}


def verify_acs3(req: Request, access_key_id: str, secret: str, seen_nonces: set[str]) -> str | None:
    """None when the request carries a valid ACS3-HMAC-SHA256 signature, else the Aliyun error code.

    CanonicalRequest = method \\n uri \\n sorted, RFC 3986-encoded query \\n `name:value\\n` per signed header
    \\n signed header names \\n hex sha256(body); StringToSign = "ACS3-HMAC-SHA256\\n" + hex sha256 of it;
    Signature = hex HMAC-SHA256(secret, StringToSign)."""
    m = _ACS3.match(req.headers.get("authorization", ""))
    if not m:
        return "IncompleteSignature"
    credential, signed_names, signature = m.group(1), m.group(2).split(";"), m.group(3)
    if credential != access_key_id:
        return "InvalidAccessKeyId.NotFound"
    if signed_names != sorted(signed_names) or not set(signed_names) >= _ACS3_REQUIRED:
        return "IncompleteSignature"
    if hashlib.sha256(req.body).hexdigest() != req.headers.get("x-acs-content-sha256"):
        return "ContentSHA256Mismatch"
    when = datetime.strptime(req.headers["x-acs-date"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    if abs((datetime.now(UTC) - when).total_seconds()) > 900:
        return "SignatureExpired"
    nonce = req.headers["x-acs-signature-nonce"]
    if nonce in seen_nonces:
        return "SignatureNonceUsed"
    seen_nonces.add(nonce)
    query = "&".join(
        f"{quote(k, safe='~')}={quote(v, safe='~')}"
        for k, v in sorted(parse_qsl(req.raw_query, keep_blank_values=True))
    )
    headers = "".join(f"{name}:{req.headers[name].strip()}\n" for name in signed_names)
    canonical = "\n".join(
        [
            req.method,
            req.path or "/",
            query,
            headers,
            ";".join(signed_names),
            hashlib.sha256(req.body).hexdigest(),
        ]
    )
    to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
    expected = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(expected, signature) else "SignatureDoesNotMatch"


# ---- Tencent Cloud API 3.0 signature (TC3-HMAC-SHA256) --------------------------------------------------

_TC3 = re.compile(
    r"^TC3-HMAC-SHA256 Credential=([^/]+)/(\d{4}-\d{2}-\d{2})/([a-z]+)/tc3_request, "
    r"SignedHeaders=([a-z0-9;\-]+), Signature=([0-9a-f]{64})$"
)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def verify_tc3(req: Request, secret_id: str, secret_key: str, service: str) -> str | None:
    """None when the request carries a valid TC3-HMAC-SHA256 signature, else the Tencent error code.

    CanonicalRequest = method \\n uri \\n query \\n `name:value\\n` per signed header (lower case) \\n signed
    names \\n hex sha256(body); StringToSign = algorithm \\n timestamp \\n date/service/tc3_request \\n hex
    sha256(CanonicalRequest); key = HMAC chain "TC3"+SecretKey -> date -> service -> "tc3_request"."""
    m = _TC3.match(req.headers.get("authorization", ""))
    if not m:
        return "AuthFailure.InvalidAuthorization"
    sid, day, svc, signed, signature = m.groups()
    if sid != secret_id:
        return "AuthFailure.SecretIdNotFound"
    timestamp = int(req.headers["x-tc-timestamp"])
    if svc != service or day != datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d"):
        return "AuthFailure.InvalidAuthorization"
    if abs(datetime.now(UTC).timestamp() - timestamp) > 300:
        return "AuthFailure.SignatureExpire"
    names = signed.split(";")
    if not {"content-type", "host"} <= set(names):
        return "AuthFailure.InvalidAuthorization"
    headers = "".join(f"{n}:{req.headers[n].strip().lower()}\n" for n in names)
    canonical = "\n".join(
        [req.method, req.path or "/", req.raw_query, headers, signed, hashlib.sha256(req.body).hexdigest()]
    )
    to_sign = "\n".join(
        [
            "TC3-HMAC-SHA256",
            str(timestamp),
            f"{day}/{service}/tc3_request",
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = _hmac(_hmac(_hmac(("TC3" + secret_key).encode(), day), service), "tc3_request")
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(expected, signature) else "AuthFailure.SignatureFailure"
