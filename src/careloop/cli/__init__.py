"""The `careloop` command line (typer). One module per command group; each has `register(app)`."""

from __future__ import annotations

import typer

from careloop import __version__

app = typer.Typer(
    name="careloop",
    help="careloop: precision healthcare marketing and patient engagement, under PIPL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version"
    ),
) -> None:
    """Settings come from CARELOOP_* environment variables (see `careloop config`)."""


def _register_all() -> None:
    from careloop.cli import (
        adherence,
        audit,
        bench,
        channel,
        consent,
        data,
        demo,
        dsr,
        events,
        governance,
        identity,
        ingest,
        journey,
        keys,
        lookalike,
        models,
        patient,
        persona,
        quarantine,
        segment,
        serve,
        synth,
        tags,
        traits,
        users,
    )

    for module in (
        synth,
        ingest,
        quarantine,
        data,
        demo,
        serve,
        bench,
        identity,
        patient,
        events,
        adherence,
        traits,
        tags,
        segment,
        persona,
        lookalike,
        models,
        journey,
        channel,
        consent,
        users,
        audit,
        keys,
        dsr,
        governance,
    ):
        module.register(app)


_register_all()

__all__ = ["app"]
