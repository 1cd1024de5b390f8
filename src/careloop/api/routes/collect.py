"""The Segment-compatible collection API: /v1/identify, track, page, screen, group, alias and batch.

Authenticated by a source's write key as the HTTP Basic user name (what the Segment and RudderStack
SDKs send). 200 means every message is committed to the store; 400 (problem details) lists the
messages kept in quarantine and why — the others in the same request are stored (a body that is not
JSON at all is quarantined whole); 401 for an unknown
key; 413 for a body over 500 KB; 503 with Retry-After when the writer is saturated.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from careloop.api.security import public
from careloop.errors import CareloopError
from careloop.events.collector import Collector
from careloop.events.sources import Source
from careloop.events.spec import (
    MAX_REQUEST_BYTES,
    TYPES,
    MalformedBody,
    Parsed,
    PayloadTooLarge,
    Rejected,
    parse,
    read_body,
)
from careloop.events.writer import Overloaded

router = APIRouter(tags=["collect"])
#: authenticated inside the handler by the source's write key (HTTP Basic), as the Segment SDKs send it
_WRITE_KEY = [
    Depends(public("Segment-compatible collection: the source's write key, checked in the handler"))
]
log = logging.getLogger("careloop.api.collect")


class Unauthorized(CareloopError):
    """No write key, or one careloop does not know (HTTP 401)."""

    http_status = 401


def _collector(request: Request) -> Collector:
    c: Collector | None = getattr(request.app.state, "collector", None)
    if c is None or not c.started:
        raise Overloaded("event collection is starting or stopping; retry in a second")
    return c


def _write_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic" and value:
        try:
            user = base64.b64decode(value.strip(), validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError) as e:
            raise Unauthorized("the Authorization header is not valid Basic credentials") from e
        if user:
            return user
    raise Unauthorized(
        "send the source's write key as the HTTP Basic user name (Authorization: Basic base64(KEY:)); "
        "create a source with `careloop source create NAME`"
    )


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        raise PayloadTooLarge(
            f"request body is {declared} bytes; the limit is {MAX_REQUEST_BYTES}: send smaller batches"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise PayloadTooLarge(f"request body is over {MAX_REQUEST_BYTES} bytes: send smaller batches")
        chunks.append(chunk)
    return b"".join(chunks)


def _problem(status: int, title: str, detail: str, instance: str, **extra: Any) -> JSONResponse:
    # `code` and `message` are what the Segment SDKs read from an error body
    return JSONResponse(
        status_code=status,
        media_type="application/problem+json",
        content={
            "type": f"https://careloop.dev/problems/{title}",
            "title": title,
            "status": status,
            "detail": detail,
            "instance": instance,
            "code": title,
            "message": detail,
            **extra,
        },
    )


async def _collect(request: Request, call: str | None) -> Response:
    started = time.perf_counter()
    path = str(request.url.path)
    collector = _collector(request)
    try:
        key = _write_key(request)
        source: Source | None = await asyncio.to_thread(collector.keys.authenticate, key)
        if source is None:
            raise Unauthorized("this write key belongs to no active source; check the key or create a source")
        raw = await _body(request)
        try:
            body = read_body(raw, request.headers.get("content-encoding"))
            parsed = parse(body, request.app.state.clock.now(), call_type=call)
        except MalformedBody as e:
            # an authenticated sender's unreadable body is kept too (encrypted), with the reason
            parsed = Parsed(rejected=[Rejected(0, call, "body", str(e), raw.decode("utf-8", "replace"))])
        receipt = await asyncio.wrap_future(collector.writer.submit(source, parsed))
    except CareloopError as e:
        reason = type(e).__name__
        collector.metrics.requests_refused.labels(reason).inc()
        log.warning("collect refused", extra={"path": path, "status": e.http_status, "reason": reason})
        resp = _problem(e.http_status, reason, str(e), path)
        if isinstance(e, Overloaded):
            resp.headers["Retry-After"] = "1"
        if isinstance(e, Unauthorized):
            resp.headers["WWW-Authenticate"] = 'Basic realm="careloop"'
        return resp
    elapsed = time.perf_counter() - started
    collector.metrics.ack_seconds.observe(elapsed)
    log.info(
        "collect",
        extra={
            "path": path,
            "source": source.name,
            "stored": receipt.stored,
            "duplicates": receipt.duplicates,
            "quarantined": len(receipt.quarantined),
            "ms": round(elapsed * 1000, 2),
        },
    )
    if receipt.quarantined:
        errors = [{"index": r.index, "field": r.field, "reason": r.reason} for r in receipt.quarantined]
        first = errors[0]
        return _problem(
            400,
            "InvalidMessage",
            f"{len(errors)} message(s) kept in quarantine (first: #{first['index']} {first['field']}: "
            f"{first['reason']}); the other {receipt.stored + receipt.duplicates} were accepted",
            path,
            errors=errors,
            stored=receipt.stored,
            duplicates=receipt.duplicates,
        )
    return JSONResponse({"success": True, "stored": receipt.stored, "duplicates": receipt.duplicates})


@router.post("/v1/batch", summary="Several messages in one request (Segment batch)", dependencies=_WRITE_KEY)
async def batch(request: Request) -> Response:
    return await _collect(request, None)


def _single(call: str) -> Any:
    async def endpoint(request: Request) -> Response:
        return await _collect(request, call)

    endpoint.__name__ = call
    return endpoint


for _call in TYPES:
    router.add_api_route(
        f"/v1/{_call}",
        _single(_call),
        methods=["POST"],
        summary=f"One {_call} call (Segment spec)",
        dependencies=_WRITE_KEY,
    )
