"""The FastAPI application factory."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from careloop import __version__
from careloop.api.errors import RejectNul, install_error_handlers
from careloop.api.routes import (
    auth,
    collect,
    consent,
    data,
    dsr,
    journeys,
    messaging,
    patients,
    personas,
    profiles,
    system,
)
from careloop.api.security import public
from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.config import Settings, get_settings
from careloop.console import mount_console
from careloop.events.collector import build_collector
from careloop.storage import Backend, connect


def create_app(
    settings: Settings | None = None, backend: Backend | None = None, *, clock: Clock = SYSTEM_CLOCK
) -> FastAPI:
    """An app bound to one store; pass `backend` to share an open one (tests, the demo)."""
    settings = settings or get_settings()
    owns_backend = backend is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.backend = backend or connect(settings.database_url, clock=clock)
        app.state.settings = settings
        app.state.clock = clock
        app.state.journeys = None
        if settings.journeys_worker:
            from careloop.journeys.worker import JourneyWorker
            from careloop.messaging.dispatch import Dispatcher

            app.state.journeys = JourneyWorker(
                app.state.backend, clock=clock, deliver=Dispatcher.from_settings(clock=clock)
            )
        app.state.collector = build_collector(
            settings,
            app.state.backend,
            clock=clock,
            wake_journeys=app.state.journeys.wake if app.state.journeys is not None else None,
        )
        app.state.collector.start()
        if app.state.journeys is not None:
            app.state.journeys.start()
        # what was loaded at start-up lives as long as the process: keep it out of the garbage
        # collector's full passes, which otherwise pause request handling for tens of milliseconds
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            if app.state.journeys is not None:
                app.state.journeys.stop()
            app.state.collector.stop()
            if owns_backend:
                app.state.backend.close()

    app = FastAPI(
        title="careloop",
        version=__version__,
        description="Precision healthcare marketing and patient engagement under PIPL.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # the collection API reads its own bodies (a NUL there is kept in quarantine with the message)
    collect_paths = frozenset(r.path for r in collect.router.routes if isinstance(r, APIRoute))
    app.add_middleware(RejectNul, body_exempt=collect_paths)
    app.include_router(system.router)
    app.include_router(auth.router)
    app.include_router(data.router)
    app.include_router(patients.router)
    app.include_router(consent.router)
    app.include_router(collect.router)
    app.include_router(profiles.router)
    app.include_router(personas.router)
    app.include_router(journeys.router)
    app.include_router(messaging.router)
    app.include_router(dsr.router)

    mount_console(app)

    @app.get("/", include_in_schema=False, dependencies=[Depends(public("a redirect to the console"))])
    def root() -> RedirectResponse:
        return RedirectResponse("/console/")

    return app
