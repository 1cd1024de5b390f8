"""What providers and patients send back: receipts, SMS replies (回T退订) and e-mail unsubscribe links."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from careloop.api.deps import store
from careloop.api.security import public
from careloop.channels.base import KINDS
from careloop.errors import ChannelError, ConfigError
from careloop.identity.records import cipher_for
from careloop.messaging import inbound
from careloop.messaging.dispatch import Router, load_routes
from careloop.storage import WorkspaceStore

router = APIRouter(prefix="/v1", tags=["messaging"])


def _router(request: Request) -> Router:
    if getattr(request.app.state, "channel_router", None) is None:
        request.app.state.channel_router = Router(
            load_routes(request.app.state.settings.channels_file), clock=request.app.state.clock
        )
    r: Router = request.app.state.channel_router
    return r


@router.post(
    "/channels/{kind}/receipts",
    summary="A provider's delivery receipts, opens and clicks (stored as events)",
    dependencies=[Depends(public("provider callback: the channel checks the provider's signature"))],
)
async def receipts(kind: str, request: Request, s: WorkspaceStore = Depends(store)) -> dict[str, int]:
    if kind not in KINDS:
        raise ConfigError(f"unknown channel kind {kind!r}; kinds are {', '.join(KINDS)}")
    raw = await request.body()
    try:
        payload: Any = orjson.loads(raw) if raw[:1] in (b"{", b"[") else raw
    except orjson.JSONDecodeError:
        payload = raw
    channel = _router(request)(s, kind)
    try:
        parsed = channel.parse_receipts(payload, dict(request.headers), dict(request.query_params))
    except ValueError as e:  # a body a channel could not decode (empty, not JSON, not UTF-8)
        raise ChannelError(f"the {kind} receipt could not be read ({type(e).__name__})") from None
    return inbound.record_receipts(s, kind, parsed, clock=request.app.state.clock)


@router.post(
    "/channels/sms/replies",
    summary="SMS replies (Aliyun SmsUp, Tencent Cloud or {phone, text}); T / 退订 opts out",
    dependencies=[Depends(public("provider callback; a reply can only opt a patient out"))],
)
async def replies(request: Request, s: WorkspaceStore = Depends(store)) -> dict[str, int]:
    try:
        payload = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise ConfigError("replies are JSON") from None
    parsed = inbound.parse_replies(payload)
    return inbound.record_replies(
        s, cipher_for(request.app.state.settings), parsed, clock=request.app.state.clock
    )


_SIGNED_LINK = [Depends(public("the link carries a signed token"))]


@router.get(
    "/unsubscribe",
    response_class=HTMLResponse,
    summary="The one-click unsubscribe link of e-mails",
    dependencies=_SIGNED_LINK,
)
@router.post("/unsubscribe", response_class=HTMLResponse, include_in_schema=False, dependencies=_SIGNED_LINK)
def unsubscribe(t: str, request: Request, s: WorkspaceStore = Depends(store)) -> HTMLResponse:
    inbound.unsubscribe(s, cipher_for(request.app.state.settings), t, clock=request.app.state.clock)
    return HTMLResponse(
        "<!doctype html><html lang='zh-CN'><meta charset='utf-8'><title>已退订</title>"
        "<p>您已退订此类邮件。You have been unsubscribed.</p></html>"
    )
