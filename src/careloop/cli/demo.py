"""`careloop demo`: generate the synthetic network, ingest it through the real pipeline, serve."""

from __future__ import annotations

import json as jsonlib
import shutil
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import typer

from careloop.cli._common import JsonOpt, console, handle_errors, print_json, print_table
from careloop.cli.ingest import print_summary, run_ingest
from careloop.cli.serve import serve_api
from careloop.config import get_settings
from careloop.errors import ConfigError

DEFAULT_PATIENTS = 10_000
#: the demo records a trait snapshot (5A stage) this many days before its last day, so the console's
#: 5A flows compare two days out of the box (the default 90-day period starts the day after it)
HISTORY_DAYS_BACK = 90


def prepare_data(out: Path, patients: int, seed: int, as_of: date, quiet: bool) -> dict[str, Any]:
    """Generate the network into `out` unless it already holds the same one."""
    from careloop.synth import generate_network

    params = {"patients": patients, "seed": seed, "as_of": as_of.isoformat()}
    marker = out / ".demo-params.json"
    if marker.exists() and jsonlib.loads(marker.read_text()) == params:
        return {"generated": False, **params}
    if out.exists():
        shutil.rmtree(out)
    summary = generate_network(out, patients=patients, seed=seed, as_of=as_of, quiet=quiet)
    marker.write_text(jsonlib.dumps(params))
    return {"generated": True, **params, "synth": summary}


def resolve_identity(workspace: str, quiet: bool) -> dict[str, Any]:
    """Unify the demo's patient records into persons, golden records and households, and add the
    look-up indexes the patient 360 reads through."""
    from careloop.cli._context import open_backend
    from careloop.identity.resolve import resolve
    from careloop.patients.indexes import ensure_lookup_indexes

    if not quiet:
        console.print("resolving identity (rules, model, households) ...")
    with open_backend() as backend:
        store = backend.workspace(workspace)
        summary = resolve(store, clock=backend.clock)
        ensure_lookup_indexes(backend)
        example = store.scalar("SELECT min(person_id) FROM person WHERE record_count > 3")
        households = store.scalar("SELECT count(DISTINCT household_id) FROM household_member")
    return {
        "records": summary.records,
        "persons": summary.persons,
        "mode": summary.mode,
        "households": int(households or 0),
        "seconds": summary.seconds,
        "example_person": example,
    }


def build_profiles(workspace: str, as_of: date, quiet: bool) -> dict[str, Any]:
    """A snapshot of the traits with history (5A stage) `HISTORY_DAYS_BACK` days before the last day
    (history only: those traits and what they read, as of that day), then traits, tags, the seed personas
    as segments (members stored), a persona run (as of the last day of the demo's history) and the
    example journeys, published (the server's worker runs them)."""
    from careloop.cli._context import open_backend
    from careloop.journeys.examples import install_examples
    from careloop.profiles.personas import build_personas, seed_personas
    from careloop.profiles.tags import apply_tags
    from careloop.profiles.traits import compute_traits

    if not quiet:
        console.print("computing traits, tags, seed-persona segments and personas ...")
    with open_backend() as backend:
        store = backend.workspace(workspace)
        past = as_of - timedelta(days=HISTORY_DAYS_BACK)
        snapshot = compute_traits(store, as_of=past, clock=backend.clock, current=False)
        traits = compute_traits(store, as_of=as_of, clock=backend.clock)
        tags = apply_tags(store, as_of=as_of, clock=backend.clock)
        seeds = seed_personas(store, refresh=True, as_of=as_of, clock=backend.clock)
        run = build_personas(store, clock=backend.clock)
        journeys = install_examples(store, publish=True, clock=backend.clock)
    return {
        "traits": traits.values,
        "history": {past.isoformat(): snapshot.history, as_of.isoformat(): traits.history},
        "tagged": tags.tagged,
        "segments": {s["name"]: s["members"] for s in seeds},
        "personas": run.k,
        "journeys": sorted(journeys["journeys"]),
    }


DEMO_SOURCE = "zhijiang-app"


def demo_event_source(workspace: str) -> dict[str, Any]:
    """An event source for the network's app (its userIds are the app's user ids), its write key kept in
    `demo-write-key` beside the key file for the demo's curl example (a dev convenience: careloop itself
    stores only hashes of write keys)."""
    from careloop.cli._context import open_backend
    from careloop.events.sources import create_source

    key_file = demo_key_file()
    with open_backend() as backend:
        store = backend.workspace(workspace)
        if not store.scalar("SELECT count(*) FROM event_source WHERE name = :n", {"n": DEMO_SOURCE}):
            _, key = create_source(
                store, DEMO_SOURCE, channel="app", user_id_kind="app_user_id", user_id_system="之江健康APP"
            )
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.write_text(key + "\n", encoding="utf-8")
            key_file.chmod(0o600)
        example = store.scalar(
            "SELECT min(patient_key) FROM patient_identifier WHERE kind = 'app_user_id' AND system = :s",
            {"s": "之江健康APP"},
        )
    return {"source": DEMO_SOURCE, "write_key_file": str(key_file), "example_user_id": example}


def demo_key_file() -> Path:
    return get_settings().key_file.parent / "demo-write-key"


def demo_logins(workspace: str) -> list[dict[str, str]]:
    """One console user per role, ``demo-<role>``, each with a new random password on every run (careloop
    keeps only argon2 hashes, so the passwords are printed now and nowhere stored)."""
    import secrets

    from careloop.cli._context import open_backend
    from careloop.cli.users import audit_change
    from careloop.privacy.auth import add_user, list_users, set_password, set_role
    from careloop.privacy.roles import ROLES

    out = []
    with open_backend() as backend:
        store = backend.workspace(workspace)
        existing = {u["username"] for u in list_users(store)}
        for role in ROLES:
            name, password = f"demo-{role.replace('_', '-')}", secrets.token_urlsafe(12)
            if name in existing:
                set_role(store, name, role, clock=backend.clock)
                set_password(store, name, password, clock=backend.clock)
                audit_change(store, "user.set_password", "user", name, role=role)
            else:
                add_user(store, name, password, role, clock=backend.clock)
                audit_change(store, "user.add", "user", name, role=role)
            out.append({"role": role, "username": name, "password": password})
    return out


def register(app: typer.Typer) -> None:
    @app.command("demo")
    @handle_errors
    def demo(
        patients: int = typer.Option(DEFAULT_PATIENTS, "--patients", help="size of the synthetic network"),
        seed: int = typer.Option(7, "--seed"),
        as_of: str = typer.Option("2026-10-31", "--as-of", help="last day of the generated history"),
        data_dir: Path = typer.Option(Path("demo-data"), "--data-dir", help="where the generated files go"),
        serve: bool = typer.Option(True, "--serve/--no-serve", help="serve the API afterwards"),
        host: str | None = typer.Option(None, "--host"),
        port: int | None = typer.Option(None, "--port"),
        json: bool = JsonOpt,
    ) -> None:
        """Build the demo: synthetic network -> ingest (validation, quarantine) -> identity -> summary -> serve."""
        s = get_settings()
        started = time.perf_counter()
        try:
            last_day = date.fromisoformat(as_of)
        except ValueError:
            raise ConfigError(f"--as-of must be a date like 2026-10-31, not {as_of!r}") from None
        if patients < 1:
            raise ConfigError("--patients must be at least 1")
        data = prepare_data(data_dir, patients, seed, last_day, quiet=json)
        summary = run_ingest(data_dir, "parquet", None, None, None, quiet=json)
        identity = resolve_identity(summary.workspace, quiet=json)
        profiles = build_profiles(summary.workspace, last_day, quiet=json)
        events = demo_event_source(summary.workspace)
        logins = demo_logins(summary.workspace)
        out: dict[str, Any] = {
            "database_url": s.database_url,
            "workspace": summary.workspace,
            "data": {k: v for k, v in data.items() if k != "synth"},
            "ingest": summary.to_dict(),
            "identity": identity,
            "profiles": profiles,
            "events": events,
            "logins": logins,
            "seconds": round(time.perf_counter() - started, 1),
        }
        if json:
            print_json(out)
        else:
            console.print(
                f"[bold]careloop demo[/]: {patients:,} synthetic patients "
                f"({'generated' if data['generated'] else 'reused'} in {data_dir}/) -> {s.database_url}"
            )
            print_summary(summary)
            print_table(
                "demo",
                ["rows ingested", "quarantined", "rows/s", "total seconds"],
                [
                    [
                        f"{summary.rows:,}",
                        summary.quarantined,
                        out["ingest"]["rows_per_second"],
                        out["seconds"],
                    ]
                ],
            )
            console.print(
                f"identity: {identity['records']:,} patient records -> {identity['persons']:,} persons "
                f"({identity['households']:,} households). Try: careloop patient show {identity['example_person']}"
            )
            console.print(
                f"profiles: {profiles['traits']:,} trait values, {profiles['tagged']:,} persons tagged, "
                f"{profiles['personas']} personas; trait snapshots (5A flows) of "
                + " and ".join(profiles["history"])
                + "; seed segments "
                + ", ".join(f"{n} {m:,}" for n, m in profiles["segments"].items())
                + ". Try: careloop persona show, careloop segment list"
            )
            console.print(
                f"journeys published: {', '.join(profiles['journeys'])} (sends go to the outbox). "
                "Try: careloop journey list, careloop journey stats appointment_reminder"
            )
            key_file = demo_key_file()
            if events["example_user_id"] and key_file.exists():
                url = f"http://{host or s.api_host}:{port or s.api_port}"
                console.print(
                    f"events: source {events['source']} (write key in {key_file}). While the server runs, try:\n"
                    f"  curl -u \"$(cat {key_file}):\" -H 'Content-Type: application/json' {url}/v1/track "
                    f'-d \'{{"userId": "{events["example_user_id"]}", "event": "app_opened"}}\'',
                    highlight=False,
                    soft_wrap=True,
                )
            url = f"http://{host or s.api_host}:{port or s.api_port}"
            print_table(
                "demo logins (new passwords on every run; docs/access-control.md)",
                ["role", "user", "password"],
                [(x["role"], x["username"], x["password"]) for x in logins],
            )
            admin = logins[0]
            console.print(
                "sign in (the token lasts 15 minutes), then send it as a bearer token:\n"
                f"  curl -s {url}/v1/auth/login -H 'Content-Type: application/json' "
                f'-d \'{{"username": "{admin["username"]}", "password": "{admin["password"]}"}}\'\n'
                f"  curl -s {url}/v1/stats -H 'Authorization: Bearer TOKEN'",
                highlight=False,
                soft_wrap=True,
            )
            console.print(
                f"[bold]console[/]: {url}/ (sign in with a demo login above; 中文 by default, English "
                "at the top right; docs/console.md)",
                highlight=False,
                soft_wrap=True,
            )
        if serve:
            serve_api(host or s.api_host, port or s.api_port)
