"""`python -m careloop.cli` runs the `careloop` command."""

from careloop.cli import app

app()
