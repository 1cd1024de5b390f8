"""CareloopError -> RFC 9457 problem-details responses."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from careloop.errors import CareloopError, StorageError


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CareloopError)
    async def _careloop_error(request: Request, exc: CareloopError) -> JSONResponse:
        detail = str(exc)
        if isinstance(exc, StorageError):
            detail = detail.split("\n  SQL:")[0]  # never send SQL to clients
        return JSONResponse(
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
