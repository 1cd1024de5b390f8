"""The baseline of ``careloop bench events``: a bare FastAPI endpoint that reads the same request body
(gunzipping it when compressed), parses the JSON with orjson and discards it. No auth, no checks, no
storage — the cost of HTTP + JSON alone on this machine.

Run: ``python -m uvicorn careloop.bench.bare_app:app``
"""

from __future__ import annotations

import gzip

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()


@app.get("/ready")
def ready() -> dict[str, str]:
    return {"status": "ready"}


@app.post("/v1/batch")
async def batch(request: Request) -> JSONResponse:
    raw = await request.body()
    if request.headers.get("content-encoding") == "gzip":
        raw = gzip.decompress(raw)
    body = orjson.loads(raw)
    return JSONResponse({"success": True, "received": len(body.get("batch", []))})
