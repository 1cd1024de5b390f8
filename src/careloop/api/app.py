"""The FastAPI application factory."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from careloop import __version__
from careloop.api.errors import install_error_handlers
from careloop.api.routes import collect, data, journeys, messaging, patients, personas, profiles, system
from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.config import Settings, get_settings
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
    app.include_router(system.router)
    app.include_router(data.router)
    app.include_router(patients.router)
    app.include_router(collect.router)
    app.include_router(profiles.router)
    app.include_router(personas.router)
    app.include_router(journeys.router)
    app.include_router(messaging.router)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    return app
