"""`careloop channel list | schema`: the installed message channels and the JSON Schema of their settings."""

from __future__ import annotations

import typer

from careloop.cli._common import JsonOpt, handle_errors, print_json, print_table


def register(app: typer.Typer) -> None:
    channel = typer.Typer(
        help="Message channels (SMS, WeChat, app push, e-mail, outbox).", no_args_is_help=True
    )

    @channel.command("list")
    @handle_errors
    def list_(json: bool = JsonOpt) -> None:
        """Every channel plugin installed (entry points `careloop.channels`), with its kind and status."""
        from careloop.channels import env_prefix, load_channels

        rows: list[dict[str, str | bool]] = []
        for name, cls in load_channels().items():
            ready, status = cls.available()
            rows.append(
                {
                    "name": name,
                    "kind": cls.kind,
                    "class": f"{cls.__module__}:{cls.__qualname__}",
                    "ready": ready,
                    "status": status,
                    "env_prefix": env_prefix(name),
                    "description": cls.description(),
                }
            )
        if json:
            print_json(rows)
            return
        print_table(
            "channels",
            ["name", "kind", "status", "settings from env", "description"],
            [[r["name"], r["kind"], r["status"], f"{r['env_prefix']}*", r["description"]] for r in rows],
        )

    @channel.command("schema")
    @handle_errors
    def schema(name: str = typer.Argument(..., help="channel name, e.g. aliyun_sms")) -> None:
        """The JSON Schema of a channel's settings (what its config block may hold; secrets are writeOnly)."""
        from careloop.channels import channel_class

        print_json(channel_class(name).config_schema())

    app.add_typer(channel, name="channel")
