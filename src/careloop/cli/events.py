"""`careloop source` (senders and their write keys) and `careloop events` (what arrived, processing)."""

from __future__ import annotations

from pathlib import Path

import typer

from careloop.cli._common import JsonOpt, console, handle_errors, print_json, print_table
from careloop.cli._context import open_backend, workspace_name

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="default: CARELOOP_WORKSPACE or 'default'")


def register(app: typer.Typer) -> None:
    source = typer.Typer(
        help="Event sources: register senders and get their write keys.", no_args_is_help=True
    )
    events = typer.Typer(
        help="Live events: counts per source, processing, attribution.", no_args_is_help=True
    )

    @source.command("create")
    @handle_errors
    def create(
        name: str = typer.Argument(..., help="source name: lowercase letters, digits, '_' or '-'"),
        channel: str = typer.Option(
            "app", "--channel", help="app, wechat_mp, wechat_oa, web, call_centre, ..."
        ),
        user_id_kind: str = typer.Option(
            "user_id",
            "--user-id-kind",
            help="what the sender's userId is: user_id (its own ids), app_user_id, his_number, openid, "
            "unionid, phone, id_number or person_id",
        ),
        user_id_system: str | None = typer.Option(
            None, "--user-id-system", help="issuer of those ids (app name, hospital code, WeChat app id)"
        ),
        plan: Path | None = typer.Option(None, "--plan", help="tracking plan YAML (see docs/events.md)"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Register a source and print its write key (shown once: store it in the sender's config)."""
        from careloop.events.plan import TrackingPlan
        from careloop.events.sources import create_source

        tracking = TrackingPlan.load(plan) if plan else None
        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace))
            src, key = create_source(
                store,
                name,
                channel=channel,
                user_id_kind=user_id_kind,
                user_id_system=user_id_system,
                plan=tracking,
            )
        out = {
            "source": src.name,
            "workspace": src.workspace,
            "write_key": key,
            "channel": src.channel,
            "user_id_kind": src.user_id_kind,
            "user_id_system": src.user_id_system,
            "planned_events": sorted(src.plan.events),
        }
        if json:
            print_json(out)
            return
        console.print(f"source [bold]{src.name}[/] created in workspace {src.workspace}")
        console.print(f"write key: [bold]{key}[/]  (shown once; careloop keeps only its hash)")
        console.print(
            "point an SDK at this server with it, e.g. analytics.write_key = KEY; analytics.host = URL"
        )

    @source.command("list")
    @handle_errors
    def list_(workspace: str | None = WorkspaceOpt, json: bool = JsonOpt) -> None:
        """Sources with their channel, userId kind and tracking plan (keys are never shown again)."""
        from careloop.events.sources import list_sources

        with open_backend() as backend:
            rows = list_sources(backend.workspace(workspace_name(workspace)))
        if json:
            print_json(rows)
            return
        print_table(
            "event sources",
            ["source", "channel", "userId kind", "system", "key ends", "planned events", "active", "created"],
            [
                (
                    r["name"],
                    r["channel"],
                    r["user_id_kind"],
                    r["user_id_system"],
                    "…" + r["key_hint"],
                    len((r["plan"] or {}).get("events", {})),
                    "yes" if r["active"] else "no",
                    r["created_at"],
                )
                for r in rows
            ],
        )

    @source.command("rotate-key")
    @handle_errors
    def rotate(
        name: str = typer.Argument(..., help="source name"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Issue a new write key; the old one stops working (running servers forget it within 30 s)."""
        from careloop.events.sources import rotate_key

        with open_backend() as backend:
            key = rotate_key(backend.workspace(workspace_name(workspace)), name)
        if json:
            print_json({"source": name, "write_key": key})
            return
        console.print(f"new write key of {name}: [bold]{key}[/]  (shown once)")

    @source.command("disable")
    @handle_errors
    def disable(
        name: str = typer.Argument(..., help="source name"), workspace: str | None = WorkspaceOpt
    ) -> None:
        """Refuse the source's requests (401) from now on (within 30 s on running servers); events stay."""
        from careloop.events.sources import set_active

        with open_backend() as backend:
            set_active(backend.workspace(workspace_name(workspace)), name, False)
        console.print(f"source {name} disabled; `careloop source enable {name}` undoes it")

    @source.command("enable")
    @handle_errors
    def enable(
        name: str = typer.Argument(..., help="source name"), workspace: str | None = WorkspaceOpt
    ) -> None:
        """Accept a disabled source's requests again."""
        from careloop.events.sources import set_active

        with open_backend() as backend:
            set_active(backend.workspace(workspace_name(workspace)), name, True)
        console.print(f"source {name} enabled")

    @source.command("plan")
    @handle_errors
    def plan_(
        name: str = typer.Argument(..., help="source name"),
        plan: Path = typer.Argument(..., help="tracking plan YAML"),
        workspace: str | None = WorkspaceOpt,
    ) -> None:
        """Replace a source's tracking plan (applies to events received from now on)."""
        from careloop.events.plan import TrackingPlan
        from careloop.events.sources import set_plan

        tracking = TrackingPlan.load(plan)
        with open_backend() as backend:
            set_plan(backend.workspace(workspace_name(workspace)), name, tracking)
        console.print(
            f"tracking plan of {name}: {len(tracking.events)} events declared (restart `careloop serve` "
            "or wait 30 s for servers to pick it up)"
        )

    @events.command("stats")
    @handle_errors
    def stats(
        source_name: str | None = typer.Option(None, "--source", help="only this source"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Stored / duplicate / quarantined / plan-violating / attributed events per source and type."""
        from careloop.events.stats import event_stats

        with open_backend() as backend:
            out = event_stats(backend.workspace(workspace_name(workspace)), source_name)
        if json:
            print_json(out)
            return
        cols = ["stored", "duplicates", "quarantined", "plan_violations", "attributed"]
        print_table(
            "live events",
            ["source", "type", *[c.replace("_", " ") for c in cols]],
            [(r["source"], r["type"], *[f"{r[c]:,}" for c in cols]) for r in out["sources"]]
            + [("all", "", *[f"{out['totals'][c]:,}" for c in cols])],
        )

    @events.command("process")
    @handle_errors
    def process(
        consumer: str = typer.Option(
            "processor", "--consumer", help="this processor's name (one per process)"
        ),
        once: bool = typer.Option(False, "--once", help="process what is waiting, then exit"),
    ) -> None:
        """Run a stream processor (for CARELOOP_STREAM=redis with CARELOOP_EVENTS_PROCESSOR=false on servers)."""
        import time

        from careloop.config import get_settings
        from careloop.events.processor import StreamProcessor
        from careloop.events.stream import open_stream

        s = get_settings()
        with open_backend() as backend:
            stream = open_stream(s.stream, s.redis_url, consumer=consumer)
            proc = StreamProcessor(backend, stream, consumer=consumer, max_batch_events=s.events_batch)
            from careloop.journeys.worker import JourneyEvents
            from careloop.profiles.live import SegmentTrigger

            proc.subscribe(SegmentTrigger(clock=backend.clock))
            proc.subscribe(JourneyEvents(clock=backend.clock))
            try:
                if once:
                    while proc.run_once(timeout=0.5):
                        pass
                else:
                    console.print(f"processing the {stream.name} stream as {consumer}; Ctrl-C stops")
                    while True:
                        try:
                            proc.run_once(timeout=1.0)
                        except KeyboardInterrupt:
                            raise
                        except Exception as e:  # keep consuming; the stream re-delivers unacknowledged work
                            console.print(f"[red]processing failed, retrying:[/] {type(e).__name__}")
                            time.sleep(1.0)
            except KeyboardInterrupt:
                pass
            finally:
                stream.close()
        console.print(f"processed {proc.processed:,} events")

    @events.command("attribute")
    @handle_errors
    def attribute(workspace: str | None = WorkspaceOpt, json: bool = JsonOpt) -> None:
        """Follow identity changes (merges, splits) and attribute events that have no patient yet.
        `careloop identity resolve / merge / split` do this themselves."""
        from careloop.events.follow import follow_identity_changes

        with open_backend() as backend:
            summary = follow_identity_changes(
                backend.workspace(workspace_name(workspace)), clock=backend.clock
            )
        if json:
            print_json(summary.as_dict())
            return
        console.print(
            f"{summary.attributed:,} events attributed; "
            f"{summary.moved} merged persons' events moved; {summary.released} split persons' events re-attributed"
        )

    app.add_typer(source, name="source")
    app.add_typer(events, name="events")
