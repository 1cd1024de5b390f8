"""`careloop journey`, `careloop content` and `careloop worker`: journeys as data, the content library,
and the worker that runs them (docs/journeys.md)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import typer
import yaml

from careloop.cli._common import JsonOpt, console, handle_errors, print_json, print_table
from careloop.cli._context import open_backend, workspace_name
from careloop.errors import ConfigError

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="default: CARELOOP_WORKSPACE or 'default'")


def read_spec(path: Path) -> Any:
    """A journey (or content) definition from a YAML / JSON file."""
    if not path.exists():
        raise ConfigError(f"{path} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is neither YAML nor JSON: {e}") from e


def register(app: typer.Typer) -> None:
    journey = typer.Typer(
        help="Journeys: validate, save, publish, pause, enter, run, stats.", no_args_is_help=True
    )
    content = typer.Typer(help="The content library: versions, review and approval.", no_args_is_help=True)
    task = typer.Typer(help="Staff tasks from journeys: list them, record outcomes.", no_args_is_help=True)

    @journey.command("validate")
    @handle_errors
    def validate(
        file: Path = typer.Argument(..., help="a journey .yaml / .json"), json: bool = JsonOpt
    ) -> None:
        """Check a definition (nodes, edges, cycles through waits, trigger, goal) without saving it."""
        from careloop.journeys.definition import parse_journey

        j = parse_journey(read_spec(file))
        out = {
            "name": j.name,
            "trigger": j.trigger.type,
            "nodes": {n.id: n.type for n in j.nodes.values()},
            "start": j.start,
            "goal": j.goal_event,
            "holdout_percent": j.holdout_percent,
            "re_entry": j.re_entry,
        }
        if json:
            print_json({"valid": True, **out})
            return
        console.print(
            f"{j.name}: valid — trigger {j.trigger.type}, {len(j.nodes)} nodes from {j.start}, "
            f"holdout {j.holdout_percent:g}%, re-entry {j.re_entry}"
            + (f", goal {j.goal_event}" if j.goal_event else "")
        )

    @journey.command("save")
    @handle_errors
    def save(
        file: Path = typer.Argument(..., help="a journey .yaml / .json"),
        publish: bool = typer.Option(False, "--publish", help="publish it at once"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Store a journey as a draft (a new version when it changed); `publish` makes it live."""
        from careloop.journeys.engine import save_journey, set_status

        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace))
            pub = save_journey(store, read_spec(file), clock=backend.clock)
            if publish:
                pub = set_status(store, pub.name, "published", clock=backend.clock)
        if json:
            print_json({"name": pub.name, "version": pub.version, "status": pub.status})
            return
        console.print(f"journey {pub.name} version {pub.version}: {pub.status}")

    for verb, status in (("publish", "published"), ("pause", "paused"), ("archive", "archived")):

        def _status(
            name: str = typer.Argument(...),
            workspace: str | None = WorkspaceOpt,
            json: bool = JsonOpt,
            _status: str = status,
        ) -> None:
            from careloop.journeys.engine import set_status

            with open_backend() as backend:
                pub = set_status(
                    backend.workspace(workspace_name(workspace)), name, _status, clock=backend.clock
                )
            if json:
                print_json({"name": pub.name, "version": pub.version, "status": pub.status})
                return
            console.print(f"journey {pub.name} version {pub.version}: {pub.status}")

        _status.__doc__ = {
            "publish": "Make a journey live: triggers enter patients and the worker runs them.",
            "pause": "Stop a journey: no new entries, running ones stay where they are until published again.",
            "archive": "Retire a journey (its history stays).",
        }[verb]
        journey.command(verb)(handle_errors(_status))

    @journey.command("list")
    @handle_errors
    def list_(workspace: str | None = WorkspaceOpt, json: bool = JsonOpt) -> None:
        """Journeys with their version, status and entries by status."""
        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace))
            rows = store.tuples("SELECT name, version, status, updated_at FROM journey ORDER BY name")
            counts: dict[str, dict[str, int]] = {}
            for j, s, c in store.tuples(
                "SELECT journey, status, count(*) FROM journey_entry GROUP BY journey, status"
            ):
                counts.setdefault(j, {})[s] = int(c)
        out = [
            {"name": n, "version": int(v), "status": s, "updated_at": u, "entries": counts.get(n, {})}
            for n, v, s, u in rows
        ]
        if json:
            print_json(out)
            return
        if not out:
            console.print("no journeys yet; `careloop journey examples --install` adds the shipped ones")
            return
        print_table(
            "journeys",
            ["name", "version", "status", "active", "waiting", "done", "exited"],
            [
                [
                    o["name"],
                    o["version"],
                    o["status"],
                    *(o["entries"].get(k, 0) for k in ("active", "waiting", "done", "exited")),
                ]
                for o in out
            ],
        )

    @journey.command("enter")
    @handle_errors
    def enter_(
        name: str = typer.Argument(...),
        persons: list[str] = typer.Argument(..., help="unified person ids"),
        key: str = typer.Option(
            "", "--key", help="trigger key: the same key never enters a person twice (default: now)"
        ),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Enter persons into a published journey (the API trigger)."""
        from careloop.journeys.engine import enter, get_journey

        with open_backend() as backend:
            store = backend.workspace(workspace_name(workspace))
            pub = get_journey(store, name)
            if pub.status != "published":
                raise ConfigError(f"journey {name} is {pub.status}; `careloop journey publish {name}` first")
            out = enter(
                store, pub, persons, key or f"api:{backend.clock.now().isoformat()}", clock=backend.clock
            )
        if json:
            print_json(out)
            return
        console.print(
            f"{name}: {out['entered']} entered, {out['holdout']} in the holdout, {out['skipped']} skipped"
        )

    @journey.command("stats")
    @handle_errors
    def stats(
        name: str = typer.Argument(...), workspace: str | None = WorkspaceOpt, json: bool = JsonOpt
    ) -> None:
        """Entries per node, step outcomes, sends and blocks by reason, conversion vs the holdout."""
        from careloop.journeys.stats import journey_stats

        with open_backend() as backend:
            out = journey_stats(backend.workspace(workspace_name(workspace)), name)
        if json:
            print_json(out)
            return
        console.print(f"[bold]{name}[/] v{out['version']} ({out['status']}): {out['entries']:,} entries")
        print_table(
            "at node",
            ["node", "status", "entries"],
            [[r["node"], r["status"], r["entries"]] for r in out["at_node"]],
        )
        print_table("steps", ["node", "kind", "outcome", "count"], [list(r.values()) for r in out["steps"]])
        if out["sends"]:
            print_table(
                "sends", ["node", "status", "reason", "count"], [list(r.values()) for r in out["sends"]]
            )
        c = out["conversion"]
        if out["goal"]:
            line = f"goal {out['goal']}: treated {c['treated_converted']}/{c['treated']}, holdout {c['holdout_converted']}/{c['holdout']}"
            if c.get("uplift") is not None:
                line += f", uplift {c['uplift']:+.1%} (95% CI {c['ci95'][0]:+.1%} to {c['ci95'][1]:+.1%})"
            console.print(line)

    @journey.command("simulate")
    @handle_errors
    def simulate_(
        file: Path = typer.Argument(..., help="a journey .yaml / .json"),
        start: str = typer.Option(..., "--from", help="first simulated day, e.g. 2026-09-01"),
        end: str = typer.Option(..., "--to", help="last simulated day"),
        step_hours: float = typer.Option(1.0, "--step-hours", help="clock step"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Run a journey against the history with a simulated clock; report entries, sends, blocks by
        reason, conversions and arms. Nothing is kept (one transaction, rolled back)."""
        from datetime import date, timedelta

        from careloop.journeys.simulate import simulate

        try:
            first, last = date.fromisoformat(start), date.fromisoformat(end)
        except ValueError:
            raise ConfigError("--from and --to are dates like 2026-09-01") from None
        if step_hours <= 0:
            raise ConfigError("--step-hours must be positive")
        with open_backend() as backend:
            out = simulate(
                backend.workspace(workspace_name(workspace)),
                read_spec(file),
                first,
                last,
                step=timedelta(hours=step_hours),
            )
        if json:
            print_json(out)
            return
        c = out["conversion"]
        console.print(
            f"[bold]{out['journey']}[/] simulated {out['simulated']['from']} .. {out['simulated']['to']}: "
            f"{out['entries']:,} entries ({c['holdout']:,} in the holdout), {out['events_replayed']:,} events replayed, "
            f"{out['outbox']:,} messages delivered"
        )
        print_table("steps", ["node", "kind", "outcome", "count"], [list(r.values()) for r in out["steps"]])
        if out["sends"]:
            print_table(
                "sends", ["node", "status", "reason", "count"], [list(r.values()) for r in out["sends"]]
            )
        if out["arms"]:
            console.print("arms: " + ", ".join(f"{a} {n:,}" for a, n in out["arms"].items()))
        if out["goal"]:
            console.print(
                f"goal {out['goal']}: treated {c['treated_converted']}/{c['treated']}, holdout {c['holdout_converted']}/{c['holdout']}"
            )

    @journey.command("run")
    @handle_errors
    def run(workspace: str | None = WorkspaceOpt, json: bool = JsonOpt) -> None:
        """One worker pass now: triggers, due entries, deliveries (`careloop worker` keeps doing it)."""
        from careloop.journeys.worker import JourneyWorker

        with open_backend() as backend:
            out = JourneyWorker(backend, clock=backend.clock, deliver=_deliverer(backend)).tick(
                [workspace_name(workspace)]
            )
        if json:
            print_json(out)
            return
        for ws, o in out.items():
            console.print(
                f"{ws}: {o['steps']:,} steps, {o['reserved']:,} sends reserved, delivered {o['delivered']}"
            )

    @journey.command("examples")
    @handle_errors
    def examples(
        install: bool = typer.Option(
            False, "--install", help="save the example content (approved) and journeys (drafts)"
        ),
        publish: bool = typer.Option(False, "--publish", help="with --install: publish the journeys too"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """The shipped example journeys for the seed scenarios (follow-up, refill, reminders, education, win-back)."""
        from careloop.journeys.examples import example_journeys, install_examples

        if not install:
            rows = [
                {"name": j["name"], "description": j.get("description", ""), "file": str(p)}
                for p, j in example_journeys()
            ]
            if json:
                print_json(rows)
                return
            print_table("example journeys", ["name", "description", "file"], [list(r.values()) for r in rows])
            return
        with open_backend() as backend:
            out = install_examples(
                backend.workspace(workspace_name(workspace)), publish=publish, clock=backend.clock
            )
        if json:
            print_json(out)
            return
        console.print(
            f"content: {', '.join(out['content'])}; journeys: "
            + ", ".join(f"{n} v{v['version']} {v['status']}" for n, v in out["journeys"].items())
        )

    @content.command("create")
    @handle_errors
    def content_create(
        content_id: str = typer.Argument(...),
        kind: str = typer.Option(..., "--kind", help="sms | wechat | app_push | email | outbox"),
        zh: str | None = typer.Option(None, "--zh", help="Chinese text (a Jinja2 template)"),
        en: str | None = typer.Option(None, "--en", help="English text"),
        title: str = typer.Option("", "--title"),
        purpose: str = typer.Option("marketing", "--purpose"),
        template_code: str | None = typer.Option(
            None, "--template-code", help="the provider's template id (SMS, WeChat)"
        ),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """A new draft version of a content item; `content approve` makes it sendable."""
        from careloop.messaging.content import save_content

        body = {k: v for k, v in (("zh", zh), ("en", en)) if v}
        with open_backend() as backend:
            item = save_content(
                backend.workspace(workspace_name(workspace)),
                content_id,
                kind=kind,
                body=body,
                title=title,
                purpose=purpose,
                template_code=template_code,
                clock=backend.clock,
            )
        if json:
            print_json(item.__dict__)
            return
        console.print(f"content {item.content_id} version {item.version}: {item.status}")

    @content.command("list")
    @handle_errors
    def content_list(workspace: str | None = WorkspaceOpt, json: bool = JsonOpt) -> None:
        """Every version with its status, approver and expiry."""
        from careloop.messaging.content import list_content

        with open_backend() as backend:
            items = list_content(backend.workspace(workspace_name(workspace)))
        if json:
            print_json([i.__dict__ for i in items])
            return
        print_table(
            "content",
            ["id", "version", "status", "kind", "purpose", "approved by", "expires"],
            [
                [i.content_id, i.version, i.status, i.kind, i.purpose, i.approved_by, i.expires_at]
                for i in items
            ],
        )

    for action in ("submit", "approve", "reject", "retire"):

        def _move(
            content_id: str = typer.Argument(...),
            version: int = typer.Argument(...),
            by: str = typer.Option(..., "--by", help="who (recorded with the approval)"),
            expires: str | None = typer.Option(
                None, "--expires", help="approval expiry, e.g. 2027-06-30T00:00:00+08:00"
            ),
            workspace: str | None = WorkspaceOpt,
            json: bool = JsonOpt,
            _action: str = action,
        ) -> None:
            from careloop.messaging.content import move

            try:
                until = datetime.fromisoformat(expires) if expires else None
            except ValueError:
                raise ConfigError(f"--expires must be an ISO date-time, not {expires!r}") from None
            if until is not None and until.tzinfo is None:
                raise ConfigError("--expires needs a time zone, e.g. 2027-06-30T00:00:00+08:00")
            with open_backend() as backend:
                item = move(
                    backend.workspace(workspace_name(workspace)),
                    content_id,
                    version,
                    _action,
                    by=by,
                    expires_at=until,
                    clock=backend.clock,
                )
            if json:
                print_json(item.__dict__)
                return
            console.print(f"content {item.content_id} version {item.version}: {item.status}")

        _move.__doc__ = f"{action.capitalize()} a content version."
        content.command(action)(handle_errors(_move))

    @task.command("list")
    @handle_errors
    def task_list(
        assignee: str | None = typer.Option(None, "--assignee"),
        status: str = typer.Option("open", "--status", help="open | done | cancelled | all"),
        limit: int = typer.Option(100, "--limit"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Staff tasks journeys created (oldest due first)."""
        from careloop.journeys.tasks import list_tasks

        with open_backend() as backend:
            rows = list_tasks(
                backend.workspace(workspace_name(workspace)),
                assignee=assignee,
                status=None if status == "all" else status,
                limit=limit,
            )
        if json:
            print_json(rows)
            return
        print_table(
            "tasks",
            ["task", "person", "kind", "title", "assignee", "due", "status"],
            [
                [r["task_id"], r["person_id"], r["kind"], r["title"], r["assignee"], r["due_at"], r["status"]]
                for r in rows
            ],
        )

    @task.command("done")
    @handle_errors
    def task_done(
        task_id: str = typer.Argument(...),
        outcome: str = typer.Option(
            ..., "--outcome", help="what happened, e.g. 'reached; will refill Friday'"
        ),
        by: str = typer.Option(..., "--by", help="who did it"),
        cancel: bool = typer.Option(False, "--cancel", help="close it as cancelled instead"),
        workspace: str | None = WorkspaceOpt,
        json: bool = JsonOpt,
    ) -> None:
        """Record a task's outcome (the patient gets a task_completed event journeys can wait for)."""
        from careloop.journeys.tasks import complete_task

        with open_backend() as backend:
            out = complete_task(
                backend.workspace(workspace_name(workspace)),
                task_id,
                outcome,
                by=by,
                status="cancelled" if cancel else "done",
                clock=backend.clock,
            )
        if json:
            print_json(out)
            return
        console.print(f"task {task_id}: {out['status']}")

    @app.command("worker")
    @handle_errors
    def worker(
        once: bool = typer.Option(False, "--once", help="one pass, then exit"),
        interval: float = typer.Option(1.0, "--interval", help="seconds between passes"),
    ) -> None:
        """Run journeys: triggers, due entries and deliveries, until stopped (several workers may share a
        PostgreSQL store; the embedded store runs its worker inside `careloop serve`)."""
        from careloop.journeys.worker import JourneyWorker

        with open_backend() as backend:
            w = JourneyWorker(backend, clock=backend.clock, interval=interval, deliver=_deliverer(backend))
            if once:
                print_json(w.tick())
                return
            console.print(f"journey worker {w.worker_id} running; Ctrl-C stops it")
            try:
                w.run_until_stopped()
            except KeyboardInterrupt:
                console.print("stopped")

    app.add_typer(journey, name="journey")
    app.add_typer(content, name="content")
    app.add_typer(task, name="task")


def _deliverer(backend: Any) -> Any:
    """The dispatcher delivering reserved sends through the configured channels."""
    from careloop.messaging.dispatch import Dispatcher

    return Dispatcher.from_settings(clock=backend.clock)
