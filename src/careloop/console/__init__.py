"""The web console: server-rendered pages (FastAPI + Jinja2 + htmx) with Apache ECharts charts, served
from this package — the vendored scripts included, so it works on an intranet without a CDN.

`mount_console(app)` adds the pages under ``/console/…`` and the static files under ``/static/``.
See docs/console.md.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from careloop.console.routes import STATIC_DIR, router

__all__ = ["STATIC_PATH", "mount_console", "router"]

STATIC_PATH = "/static"


def mount_console(app: FastAPI) -> None:
    """Serve the console on `app`: its routes and its static files."""
    app.include_router(router)
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="static")
