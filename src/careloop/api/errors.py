"""CareloopError -> RFC 9457 problem-details responses; URLs carrying NUL characters refused up front."""

from __future__ import annotations

import re
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from careloop.errors import CareloopError, StorageError


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CareloopError)
    async def _careloop_error(request: Request, exc: CareloopError) -> JSONResponse:
        detail = str(exc)
        if isinstance(exc, StorageError):
            detail = detail.split("\n  SQL:")[0]  # never send SQL to clients
        return JSONResponse(
            headers=getattr(exc, "headers", None),  # WWW-Authenticate on 401, Retry-After on 429
            status_code=exc.http_status,
            media_type="application/problem+json",
            content={
                "type": f"https://careloop.dev/problems/{type(exc).__name__}",
                "title": type(exc).__name__,
                "status": exc.http_status,
                "detail": detail,
                "instance": str(request.url.path),
            },
        )


#: a JSON escape of NUL (an odd number of backslashes before u0000: an escaped backslash is text)
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


class RejectNul:
    """400 for a URL or a JSON body holding a NUL character: no stored text holds one (PostgreSQL cannot
    store it), so such a request names nothing and stores nothing, and engines never see it as a
    parameter. Routes in `body_exempt` read their bodies themselves (the collection API keeps such
    messages in quarantine)."""

    def __init__(self, app: ASGIApp, body_exempt: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.body_exempt = body_exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"")
        if "\x00" in scope.get("path", "") or b"%00" in query or b"\x00" in query:
            await _refuse(scope, send, "NUL characters are not allowed in a URL")
            return
        if scope["method"] not in ("POST", "PUT", "PATCH") or scope.get("path") in self.body_exempt:
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if b"\x00" in body or _JSON_NUL.search(body):
            await _refuse(scope, send, "NUL characters are not allowed in a request body")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _refuse(scope: Scope, send: Send, detail: str) -> None:
    body = orjson.dumps(_problem(400, "ConfigError", detail, scope))
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _problem(status: int, title: str, detail: str, scope: Scope) -> dict[str, Any]:
    return {
        "type": f"https://careloop.dev/problems/{title}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": scope.get("path", "").replace("\x00", ""),
    }
