"""The console's routes: server-rendered pages (Jinja2), htmx fragments for the segment builder, exports.

Every route resolves the signed-in session and checks its view's permission (`careloop.console.access`)
before it reads anything; errors become HTML pages in the user's language (never SQL or stack traces);
responses carry a strict Content-Security-Policy (scripts only from /static), ``Cache-Control: no-store``
(pages may hold personal data) and ``Server-Timing: app;dur=…`` — the server time the dashboards are
measured by.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Depends, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from careloop import __version__
from careloop.console import assessment as assess
from careloop.console import pages
from careloop.console import segment_builder as builder
from careloop.console.access import GUARDS, NEEDS, SIGNED_IN, VIEW, ConsolePublic, allowed, decide, views_for
from careloop.console.i18n import DEFAULT_LANG, LANG_COOKIE, LANGS, label_for, translator
from careloop.console.model import Ctx, Page, Section, fmt, fmt_delta
from careloop.console.period import PERIOD_DAYS, data_date, parse_period
from careloop.console.session import (
    LoginRequired,
    Session,
    clear_session,
    current,
    same_origin,
    set_session,
    sign_in,
)
from careloop.console.tables import Col, DataTable, to_csv, to_xlsx
from careloop.errors import CareloopError, ConfigError, NotFoundError, StorageError
from careloop.patients import PatientView
from careloop.privacy.audit import audit_event, audit_lookup, audit_patient_read
from careloop.privacy.auth import AuthenticationError, LoginThrottled, PermissionDenied
from careloop.profiles import segments as seg
from careloop.profiles.conditions import OPS

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.globals["version"] = __version__

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def lang_of(request: Request) -> str:
    q = request.query_params.get("lang")
    if q in LANGS:
        return q
    c = request.cookies.get(LANG_COOKIE)
    return c if c in LANGS else DEFAULT_LANG


class ConsoleRoute(APIRoute):
    """A console route: HTML errors, security headers, session and language cookies, server timing."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await handler(request)
            except LoginRequired:
                response = _to_login(request)
            except RequestValidationError:
                response = error_page(request, 400, "error.bad_request")
            except CareloopError as e:
                response = error_page(request, e.http_status, _error_key(e), detail=_detail(e))
            _finish(request, response, started)
            return response

        return route


def _error_key(e: CareloopError) -> str:
    if isinstance(e, PermissionDenied):
        return "error.forbidden"
    if isinstance(e, NotFoundError):
        return "error.not_found"
    if isinstance(e, ConfigError):
        return "error.bad_request"
    return "error.failed"


def _detail(e: CareloopError) -> str:
    text = str(e)
    return text.split("\n  SQL:")[0] if isinstance(e, StorageError) else text


def _finish(request: Request, response: Response, started: float) -> None:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    q = request.query_params.get("lang")
    if q in LANGS:
        response.set_cookie(LANG_COOKIE, q, samesite="lax", path="/", max_age=365 * 86400)
    session: Session | None = getattr(request.state, "console_session", None)
    if session is not None and session.refreshed is not None:
        set_session(request, response, session.refreshed, session.store.workspace)
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"


def _to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    url = "/console/login?" + urlencode({"next": target}) if request.method == "GET" else "/console/login"
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": url})
    response = RedirectResponse(url, status_code=303)
    clear_session(response)
    return response


router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


# ---- rendering -----------------------------------------------------------------------------------
def _tz(request: Request) -> ZoneInfo:
    return ZoneInfo(request.app.state.settings.timezone)


def make_ctx(request: Request, session: Session, args: dict[str, str] | None = None) -> Ctx:
    tz = _tz(request)
    clock = request.app.state.clock
    day = data_date(session.store, tz, clock)
    params = dict(request.query_params)
    return Ctx(
        principal=session.principal,
        store=session.store,
        lang=lang_of(request),
        tz=tz,
        clock=clock,
        data_date=day,
        period=parse_period(params, day, tz),
        args={**params, **(args or {})},
    )


def _base(request: Request, ctx: Ctx | None, view: str | None) -> dict[str, Any]:
    lang = ctx.lang if ctx else lang_of(request)
    session: Session | None = getattr(request.state, "console_session", None)
    principal = ctx.principal if ctx else (session.principal if session else None)
    tz = ctx.tz if ctx else _tz(request)

    def cell(col: Col, row: dict[str, Any]) -> str:
        value = row.get(col.key)
        if col.translate and value is not None:
            return label_for(lang, col.translate, value)
        return fmt(value, col.kind, lang, tz)

    def switch(to: str) -> str:
        params = {k: v for k, v in request.query_params.items() if k != "lang"}
        return request.url.path + "?" + urlencode({**params, "lang": to})

    return {
        "lang": lang,
        "t": translator(lang),
        "label": lambda group, value: label_for(lang, group, value),
        "fmt": lambda value, kind="text": fmt(value, kind, lang, tz),
        "fmt_delta": lambda k: fmt_delta(k, lang),
        "cell": cell,
        "principal": principal,
        "views": views_for(principal) if principal else [],
        "view": view,
        "ctx": ctx,
        "switch_lang": switch,
        "period_days": PERIOD_DAYS,
        "may": (lambda permission: principal is not None and allowed(principal, permission)),
        "quote": quote,
    }


def render(
    request: Request, template: str, ctx: Ctx | None, view: str | None, status: int = 200, **values: Any
) -> HTMLResponse:
    context = {**_base(request, ctx, view), **values}
    return templates.TemplateResponse(request, template, context, status_code=status)


def error_page(request: Request, status: int, key: str, detail: str | None = None) -> HTMLResponse:
    return render(request, "error.html", None, None, status, code=status, message=key, detail=detail)


def _exports(ctx: Ctx, view: str, **args: str) -> dict[str, Any]:
    """What the page's export links need: the view and its arguments (the period included)."""
    query = {**ctx.period.query(), **args}
    return {
        "export_view": view,
        "export_query": urlencode(query),
        "may_export_aggregate": ctx.principal.allows("export:aggregate"),
        "may_export_person": ctx.principal.allows("export:person_level"),
    }


def dashboard(
    request: Request,
    ctx: Ctx,
    view: str,
    title: str,
    page: Page,
    sections: list[Section],
    *,
    period: bool = True,
    intro: str | None = None,
    **values: Any,
) -> HTMLResponse:
    return render(
        request,
        "dashboard.html",
        ctx,
        view,
        title=title,
        page=page,
        sections=sections,
        show_period=period,
        intro=intro,
        **_exports(ctx, view),
        **values,
    )


# ---- frame ---------------------------------------------------------------------------------------
@router.get("/console")
@router.get("/console/")
def home(request: Request, session: Session = Depends(SIGNED_IN)) -> Response:
    views = views_for(session.principal)
    return RedirectResponse(views[0].path if views else "/console/assessment", status_code=303)


@router.get("/console/login", dependencies=[Depends(ConsolePublic("the sign-in page"))])
def login_page(request: Request, next: str = "/console/") -> HTMLResponse:
    return render(
        request,
        "login.html",
        None,
        None,
        next=_safe_next(next),
        workspace=request.app.state.settings.workspace,
        error=None,
        username="",
    )


def _safe_next(target: str) -> str:
    """Only a console path of this site (no scheme, no //host)."""
    if target.startswith("/console") and not target.startswith("//") and "\\" not in target:
        return target
    return "/console/"


@router.post("/console/login", dependencies=[Depends(ConsolePublic("the sign-in itself"))])
def login(
    request: Request,
    username: str = Form(..., max_length=64),
    password: str = Form(..., max_length=1024),
    workspace: str = Form("", max_length=64),
    next: str = Form("/console/"),
) -> Response:
    ws = workspace.strip() or request.app.state.settings.workspace
    if not same_origin(request):
        return error_page(request, 403, "error.cross_site")
    try:
        token = sign_in(request, ws, username.strip(), password)
    except (AuthenticationError, LoginThrottled, LoginRequired) as e:
        status = 429 if isinstance(e, LoginThrottled) else 401
        key = "login.throttled" if isinstance(e, LoginThrottled) else "login.failed"
        response = render(
            request,
            "login.html",
            None,
            None,
            status,
            next=_safe_next(next),
            workspace=ws,
            error=key,
            username=username,
        )
        if isinstance(e, LoginThrottled):
            response.headers["Retry-After"] = str(e.retry_after)
        return response
    done = RedirectResponse(_safe_next(next), status_code=303)
    set_session(request, response=done, token=token, workspace=ws)
    return done


@router.post(
    "/console/logout", dependencies=[Depends(ConsolePublic("signing out ends the caller's own session"))]
)
def logout(request: Request) -> Response:
    response = RedirectResponse("/console/login", status_code=303)
    if not same_origin(request):
        return error_page(request, 403, "error.cross_site")
    try:
        session = current(request)
    except LoginRequired:
        session = None
    if session is not None:
        p = session.principal
        audit_event(
            session.store,
            actor=f"console:{p.actor}",
            role=p.role.name,
            action="logout",
            target_kind=None,
            target_id=None,
        )
    clear_session(response)
    return response


# ---- dashboards ----------------------------------------------------------------------------------
@router.get("/console/executive")
def executive(request: Request, session: Session = Depends(GUARDS["executive"])) -> HTMLResponse:
    ctx = make_ctx(request, session)
    page = pages.executive(ctx)
    sections = [
        Section("section.trend", ["trend"], ["monthly", "revenue"]),
        Section("section.adherence", ["adherence"], ["adherence_by_class"]),
    ]
    return dashboard(request, ctx, "executive", "nav.executive", page, sections, intro="intro.executive")


@router.get("/console/marketing")
def marketing(request: Request, session: Session = Depends(GUARDS["marketing"])) -> HTMLResponse:
    ctx = make_ctx(request, session)
    page = pages.marketing(ctx)
    sections = [
        Section(
            "section.journeys",
            ["journey_channels", "journey_blocks"],
            ["journey_channels", "journey_blocks", "journeys"],
            "note.journey_sends",
        ),
        Section(
            "section.campaigns", ["campaign_rates"], ["campaigns", "crm_channels", "crm_blocks"], "note.crm"
        ),
    ]
    return dashboard(request, ctx, "marketing", "nav.marketing", page, sections, intro="intro.marketing")


@router.get("/console/journey-analysis")
def journey_analysis(
    request: Request, session: Session = Depends(GUARDS["journey_analysis"])
) -> HTMLResponse:
    ctx = make_ctx(request, session)
    page = pages.journey_analysis(ctx)
    sections = [
        Section("section.funnel", ["funnel"], ["funnel"]),
        Section("section.stages_5a", ["stages_5a"], ["stages_5a"]),
        Section(
            "section.flows_5a",
            ["flows_5a"],
            ["flows_5a", "moves_5a"],
            detail=page.extra["flows_5a_detail"],
        ),
        Section("section.retention", ["retention"], ["cohorts"]),
        Section("section.drop_off", [], ["drop_off"]),
    ]
    return dashboard(
        request,
        ctx,
        "journey_analysis",
        "nav.journey_analysis",
        page,
        sections,
        intro="intro.journey_analysis",
    )


# ---- patients ------------------------------------------------------------------------------------
@router.get("/console/patients")
def patients(request: Request, id: str = "", session: Session = Depends(GUARDS["patients"])) -> Response:
    if id.strip():
        return RedirectResponse("/console/patients/" + quote(id.strip(), safe=":"), status_code=303)
    ctx = make_ctx(request, session)
    return render(request, "patients.html", ctx, "patients", title="nav.patients", found=None, error=None)


@router.post("/console/patients/find")
def find_patients(
    request: Request,
    phone: str = Form("", max_length=64),
    id_number: str = Form("", max_length=64),
    session: Session = Depends(NEEDS["patients:find"]),
) -> Response:
    if not same_origin(request):
        return error_page(request, 403, "error.cross_site")
    ctx = make_ctx(request, session)
    phone, id_number = phone.strip(), id_number.strip()
    if bool(phone) == bool(id_number):
        return render(
            request,
            "patients.html",
            ctx,
            "patients",
            400,
            title="nav.patients",
            found=None,
            error="patients.one_of",
        )
    view = PatientView(ctx.store, viewer=ctx.principal.viewer)
    found = view.find(phone=phone or None, id_number=id_number or None)
    p = ctx.principal
    audit_lookup(
        ctx.store,
        view.cipher,
        found,
        by="phone" if phone else "id_number",
        actor=f"console:{p.actor}",
        role=p.role.name,
        via="console",
    )
    return render(request, "patients.html", ctx, "patients", title="nav.patients", found=found, error=None)


@router.get("/console/patients/{ident}")
def patient(request: Request, ident: str, session: Session = Depends(GUARDS["patients"])) -> HTMLResponse:
    ctx = make_ctx(request, session)
    page, doc = pages.patient(ctx, ident)
    p = ctx.principal
    audit_patient_read(
        ctx.store,
        page.extra["cipher"],
        ident,
        doc.get("person_id"),
        actor=f"console:{p.actor}",
        via="console",
        viewer=p.viewer.role,
        role=p.role.name,
    )
    return render(
        request,
        "patient.html",
        ctx,
        "patients",
        title="nav.patients",
        page=page,
        doc=doc,
        ident=ident,
        **_exports(ctx, "patient", id=ident),
    )


# ---- segments ------------------------------------------------------------------------------------
@router.get("/console/segments")
def segments(request: Request, session: Session = Depends(GUARDS["segments"])) -> HTMLResponse:
    ctx = make_ctx(request, session)
    page = pages.segments(ctx)
    return dashboard(
        request,
        ctx,
        "segments",
        "nav.segments",
        page,
        [Section("section.segments", ["segment_sizes"], ["segments"])],
        period=False,
        intro="intro.segments",
    )


def _builder(
    request: Request,
    ctx: Ctx,
    form: builder.Form,
    result: dict[str, Any] | None,
    status: int = 200,
    saved: str | None = None,
) -> HTMLResponse:
    while len(form.rows) < 1:
        form.rows.append(builder.Row())
    return render(
        request,
        "segment_builder.html",
        ctx,
        "segments",
        status,
        title="segments.builder",
        form=form,
        result=result,
        vocab=builder.vocabulary(ctx.store),
        kinds=builder.KINDS,
        ops=OPS,
        event_ops=builder.EVENT_OPS,
        max_rows=builder.MAX_ROWS,
        saved=saved,
    )


def _preview(ctx: Ctx, form: builder.Form) -> dict[str, Any]:
    return builder.preview(
        ctx.store,
        form,
        ctx.data_date,
        ctx.tz,
        explain_person=ctx.principal.allows("segments:members"),
        clock=ctx.clock,
    )


@router.get("/console/segments/new")
def segment_new(
    request: Request, definition: str = "", name: str = "", session: Session = Depends(GUARDS["segments"])
) -> HTMLResponse:
    ctx = make_ctx(request, session)
    form = builder.Form(rows=[builder.Row()])
    result = None
    if definition:
        try:
            parsed = orjson.loads(definition)
        except orjson.JSONDecodeError:
            parsed = None
        prefilled = builder.form_of(parsed)
        if prefilled is not None:
            form = prefilled
            result = _preview(ctx, form)
    if name:
        try:
            existing = seg.get_segment(ctx.store, name)
        except NotFoundError:
            existing = None
        if existing is not None and (prefilled := builder.form_of(existing.definition)) is not None:
            form = prefilled
            form.name, form.description = existing.name, existing.description or ""
            result = _preview(ctx, form)
    return _builder(request, ctx, form, result)


@router.post("/console/segments/new")
async def segment_post(request: Request, session: Session = Depends(GUARDS["segments"])) -> Response:
    if not same_origin(request):
        return error_page(request, 403, "error.cross_site")
    data = await request.form()
    ctx = make_ctx(request, session)
    form = builder.parse_form({k: v for k, v in data.items() if isinstance(v, str)})
    action = str(data.get("action") or "preview")
    if action == "add" and len(form.rows) < builder.MAX_ROWS:
        form.rows.append(builder.Row())
    if action.startswith("remove:"):
        with contextlib.suppress(ValueError, IndexError):
            del form.rows[int(action.split(":", 1)[1])]
    if action == "save":
        decide(request, session, "segments:write")
        d = builder.definition(form)
        if d is None or not form.name:
            result = _preview(ctx, form)
            result["error"] = ctx.t("segments.save_needs")
            return _builder(request, ctx, form, result, 400)
        try:
            p = session.principal
            saved = seg.save_segment(
                ctx.store,
                form.name,
                d,
                form.description,
                clock=ctx.clock,
                actor=f"console:{p.actor}",
                role=p.role.name,
            )
        except ConfigError as e:
            result = _preview(ctx, form)
            result["error"] = str(e)
            return _builder(request, ctx, form, result, 400)
        return RedirectResponse("/console/segments/" + quote(saved.name) + "?saved=1", status_code=303)
    return _builder(request, ctx, form, _preview(ctx, form))


@router.post("/console/segments/preview")
async def segment_preview(request: Request, session: Session = Depends(GUARDS["segments"])) -> HTMLResponse:
    """The live count (htmx): the builder form in, the preview fragment out."""
    if not same_origin(request):
        return error_page(request, 403, "error.cross_site")
    data = await request.form()
    ctx = make_ctx(request, session)
    form = builder.parse_form({k: v for k, v in data.items() if isinstance(v, str)})
    return render(request, "_segment_preview.html", ctx, "segments", result=_preview(ctx, form))


def _audit_read(ctx: Ctx, what: str, kind: str, target: str) -> None:
    """Record a console read of person-level data beyond the 360 (a segment explanation for a person,
    a quarantined row's original values)."""
    p = ctx.principal
    audit_event(
        ctx.store,
        actor=f"console:{p.actor}",
        role=p.role.name,
        action="read.patient" if kind == "person" else "read.list",
        target_kind=kind,
        target_id=target,
        detail={"via": "console", "what": what},
    )


@router.get("/console/segments/{name}")
def segment(
    request: Request,
    name: str,
    person: str = "",
    saved: str = "",
    session: Session = Depends(GUARDS["segments"]),
) -> HTMLResponse:
    ctx = make_ctx(request, session)
    page = pages.segment(ctx, name)
    definition = page.extra["segment"].definition
    evaluated = seg.count(ctx.store, definition, as_of=ctx.data_date, clock=ctx.clock)
    explanation = None
    if person.strip():
        decide(request, session, "segments:members")
        explanation = seg.explain(ctx.store, definition, person.strip(), as_of=ctx.data_date, clock=ctx.clock)
        _audit_read(ctx, f"explain:{name}", "person", person.strip())
    return render(
        request,
        "segment.html",
        ctx,
        "segments",
        title="nav.segments",
        page=page,
        segment=page.extra["segment"],
        members=page.extra["members"],
        evaluated=evaluated,
        definition_json=orjson.dumps(definition, option=orjson.OPT_INDENT_2).decode(),
        explanation=explanation,
        person=person.strip(),
        saved=bool(saved),
        editable=builder.form_of(definition) is not None,
        **_exports(ctx, "segment", name=name),
    )


# ---- journeys ------------------------------------------------------------------------------------
@router.get("/console/journeys")
def journeys(request: Request, session: Session = Depends(GUARDS["journeys"])) -> HTMLResponse:
    ctx = make_ctx(request, session)
    page = pages.journeys(ctx)
    return dashboard(
        request,
        ctx,
        "journeys",
        "nav.journeys",
        page,
        [Section("section.journey_list", [], ["journeys"])],
        period=False,
        intro="intro.journeys",
    )


@router.get("/console/journeys/{name}")
def journey(request: Request, name: str, session: Session = Depends(GUARDS["journeys"])) -> HTMLResponse:
    ctx = make_ctx(request, session)
    page = pages.journey(ctx, name)
    pub = page.extra["journey"]
    return render(
        request,
        "journey.html",
        ctx,
        "journeys",
        title="nav.journeys",
        page=page,
        pub=pub,
        definition_json=orjson.dumps(pub.journey.raw, option=orjson.OPT_INDENT_2).decode(),
        **_exports(ctx, "journey", name=name),
    )


# ---- data quality --------------------------------------------------------------------------------
@router.get("/console/data-quality")
def data_quality(request: Request, session: Session = Depends(GUARDS["data_quality"])) -> HTMLResponse:
    ctx = make_ctx(request, session)
    page = pages.data_quality(ctx)
    sections = [Section("section.runs", [], ["runs", "entities"])]
    if page.extra["may_quarantine"]:
        sections.insert(
            0, Section("section.quarantine", ["reasons"], ["reasons", "quarantine"], "note.quarantine")
        )
    return dashboard(
        request,
        ctx,
        "data_quality",
        "nav.data_quality",
        page,
        sections,
        period=False,
        intro="intro.data_quality",
    )


@router.get("/console/data-quality/quarantine/{qid}")
def quarantine_row(
    request: Request, qid: str, session: Session = Depends(NEEDS["quarantine:read"])
) -> HTMLResponse:
    ctx = make_ctx(request, session)
    row = pages.quarantine_row(ctx, qid)
    if row.get("raw") is not None:  # a rejected record's original values are shown (masked by the role)
        _audit_read(ctx, "quarantine", "quarantine", qid)
    raw = (
        orjson.dumps(row["raw"], option=orjson.OPT_INDENT_2).decode() if row.get("raw") is not None else None
    )
    return render(
        request, "quarantine_row.html", ctx, "data_quality", title="nav.data_quality", row=row, raw=raw
    )


# ---- capability self-assessment ------------------------------------------------------------------
@router.get("/console/assessment")
def assessment(request: Request, session: Session = Depends(GUARDS["assessment"])) -> HTMLResponse:
    ctx = make_ctx(request, session)
    page = pages.assessment(ctx)
    return render(
        request,
        "assessment.html",
        ctx,
        "assessment",
        title="nav.assessment",
        page=page,
        error=None,
        answers={},
        form_title="",
        **_exports(ctx, "assessment"),
    )


@router.post("/console/assessment")
async def assessment_post(request: Request, session: Session = Depends(GUARDS["assessment"])) -> Response:
    if not same_origin(request):
        return error_page(request, 403, "error.cross_site")
    data = await request.form()
    ctx = make_ctx(request, session)
    answers: dict[str, int] = {}
    for qid in assess.QUESTIONS:
        raw = data.get(qid)
        if isinstance(raw, str) and raw.isdigit():
            answers[qid] = int(raw)
    title = str(data.get("title") or "")
    try:
        saved = assess.save(ctx.store, title, answers, by=ctx.principal.name, clock=ctx.clock)
    except ConfigError:
        page = pages.assessment(ctx)
        return render(
            request,
            "assessment.html",
            ctx,
            "assessment",
            400,
            title="nav.assessment",
            page=page,
            error="assessment.incomplete",
            answers=answers,
            form_title=title,
            **_exports(ctx, "assessment"),
        )
    return RedirectResponse("/console/assessment/" + quote(saved["assessment_id"]), status_code=303)


@router.get("/console/assessment/{aid}")
def assessment_one(
    request: Request, aid: str, session: Session = Depends(GUARDS["assessment"])
) -> HTMLResponse:
    ctx = make_ctx(request, session)
    past = assess.history(ctx.store, 500)
    index = next((i for i, a in enumerate(past) if a["assessment_id"] == aid), None)
    if index is None:
        raise NotFoundError(f"no assessment {aid!r}")
    chosen = past[index]
    before = past[index + 1] if index + 1 < len(past) else None  # newest first: the one submitted before
    page = pages.assessment(ctx)
    chart = page.charts["radar"]
    names = [d.zh if ctx.lang == "zh" else d.en for d in assess.DIMENSIONS]
    chart.option["radar"]["indicator"] = [{"name": n, "max": 5, "min": 0} for n in names]
    chart.option["series"][0]["data"] = [
        {
            "name": f"{a['title']} · {a['created_at']:%Y-%m-%d}",
            "value": [a["scores"].get(d.id) for d in assess.DIMENSIONS],
        }
        for a in (chosen, before)
        if a is not None
    ]
    return render(
        request,
        "assessment_one.html",
        ctx,
        "assessment",
        title="nav.assessment",
        page=page,
        a=chosen,
        before=before,
        dimensions=assess.DIMENSIONS,
    )


# ---- exports -------------------------------------------------------------------------------------
#: export view -> the permission of the page it exports
_EXPORT_PERMISSION = {
    **{v.name: v.permission for v in VIEW.values()},
    "patient": VIEW["patients"].permission,
    "segment": VIEW["segments"].permission,
    "journey": VIEW["journeys"].permission,
}


@router.get("/console/export/{view}/{file}")
def export(request: Request, view: str, file: str, session: Session = Depends(SIGNED_IN)) -> Response:
    """A page's table as CSV or Excel: the page's permission, then export:aggregate (or, for a
    person-level table, export:person_level — and an audit entry)."""
    builder_fn = pages.EXPORTABLE.get(view)
    table_id, _, ext = file.rpartition(".")
    if builder_fn is None or ext not in ("csv", "xlsx"):
        raise NotFoundError(f"nothing to export at {view}/{file}")
    decide(request, session, _EXPORT_PERMISSION[view])
    ctx = make_ctx(request, session)
    page = builder_fn(ctx)
    table: DataTable | None = page.tables.get(table_id)
    if table is None:
        raise NotFoundError(f"view {view} has no table {table_id!r}")
    decide(request, session, "export:person_level" if table.person_level else "export:aggregate")
    if table.person_level:
        p = ctx.principal
        target = page.extra.get("doc", {}).get("person_id") if view == "patient" else None
        audit_event(
            ctx.store,
            actor=f"console:{p.actor}",
            role=p.role.name,
            action="export",
            target_kind="person" if target else "table",
            target_id=target,
            detail={
                "via": "console",
                "view": view,
                "table": table_id,
                "rows": len(table.rows),
                "format": ext,
            },
        )
    name = f"careloop-{view}-{table_id}-{ctx.clock.now().astimezone(ctx.tz).date().isoformat()}.{ext}"
    if ext == "csv":
        body = to_csv(table, ctx.t, ctx.label)
        media = "text/csv; charset=utf-8"
    else:
        body = to_xlsx(table, ctx.t, ctx.label, ctx.t(table.title))
        media = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    return Response(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})
