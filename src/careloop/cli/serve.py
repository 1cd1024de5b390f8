"""`careloop serve`: the API and the web console with uvicorn."""

from __future__ import annotations

import typer

from careloop.cli._common import handle_errors
from careloop.config import get_settings


def serve_api(host: str, port: int) -> None:
    import uvicorn

    from careloop.api import create_app
    from careloop.logs import configure

    configure(get_settings().log_level)
    typer.echo(
        f"careloop serving on http://{host}:{port} (console at http://{host}:{port}/console/, "
        f"API docs at http://{host}:{port}/docs); Ctrl-C stops"
    )
    # uvicorn's own access log stays off: it would write query strings (a phone look-up) to the log
    uvicorn.run(create_app(), host=host, port=port, log_level="warning", access_log=False)


def register(app: typer.Typer) -> None:
    @app.command("serve")
    @handle_errors
    def serve(
        host: str | None = typer.Option(None, "--host", help="default 127.0.0.1 (CARELOOP_API_HOST)"),
        port: int | None = typer.Option(None, "--port", help="default 8000 (CARELOOP_API_PORT)"),
    ) -> None:
        """Serve the HTTP API on the configured store."""
        s = get_settings()
        serve_api(host or s.api_host, port or s.api_port)
