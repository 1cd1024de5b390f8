"""`careloop patient show|find|index`: the patient 360, look-ups by phone or ID number, look-up indexes."""

from __future__ import annotations

from typing import Any

import typer

from careloop.cli._common import JsonOpt, console, handle_errors, print_json, print_table
from careloop.cli._context import open_backend, workspace_name
from careloop.errors import ConfigError

patient_app = typer.Typer(help="Patient 360 and patient look-ups.", no_args_is_help=True)

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="workspace (default CARELOOP_WORKSPACE)")


@patient_app.command("show")
@handle_errors
def show(
    ident: str = typer.Argument(..., metavar="ID", help="person id, or a record as SOURCE:KEY"),
    events: int = typer.Option(20, "--events", min=0, help="most recent events to show"),
    limit: int = typer.Option(200, "--limit", min=1, help="most recent rows per other list"),
    workspace: str | None = WorkspaceOpt,
    json: bool = JsonOpt,
) -> None:
    """Everything about one person: identifiers, golden record, sources, care, engagement, household."""
    from careloop.patients import PatientView
    from careloop.privacy.audit import audit_patient_read, cli_actor

    backend = open_backend()
    try:
        store = backend.workspace(workspace_name(workspace), create=False)
        view = PatientView(store, events_limit=events, list_limit=limit)
        doc = view.show(ident)
        audit_patient_read(
            store, view.cipher, ident, doc["person_id"], actor=cli_actor(), via="cli", viewer=view.viewer.role
        )
    finally:
        backend.close()
    if json:
        print_json(doc)
        return
    _print_360(doc)


@patient_app.command("find")
@handle_errors
def find(
    phone: str | None = typer.Option(None, "--phone", help="mobile or landline, any common format"),
    id_number: str | None = typer.Option(None, "--id-number", help="resident ID number (身份证号)"),
    workspace: str | None = WorkspaceOpt,
    json: bool = JsonOpt,
) -> None:
    """Persons whose golden record or any record carries the phone or ID number (blind-index look-up)."""
    from careloop.patients import PatientView
    from careloop.privacy.audit import audit_lookup, cli_actor

    if (phone is None) == (id_number is None):
        raise ConfigError("give exactly one of --phone or --id-number")
    backend = open_backend()
    try:
        store = backend.workspace(workspace_name(workspace), create=False)
        view = PatientView(store)
        found = view.find(phone=phone, id_number=id_number)
        by = "phone" if phone is not None else "id_number"
        audit_lookup(store, view.cipher, found, by=by, actor=cli_actor(), via="cli")
    finally:
        backend.close()
    if json:
        print_json(found)
        return
    print_table(
        f"{len(found)} match(es); show one with `careloop patient show ID`",
        ["ID", "name", "sex", "birth date", "sources", "matched"],
        [
            [
                f["show"],
                f["name"],
                f["sex"],
                f["birth_date"],
                ", ".join(f["sources"] or []),
                "; ".join(f["matched"]),
            ]
            for f in found
        ],
    )


@patient_app.command("index")
@handle_errors
def index(
    drop: bool = typer.Option(False, "--drop", help="drop the look-up indexes (before a large reload)"),
    json: bool = JsonOpt,
) -> None:
    """Create the DuckDB look-up indexes a fast 360 needs (after a bulk load); PostgreSQL has them."""
    from careloop.patients.indexes import drop_lookup_indexes, ensure_lookup_indexes

    backend = open_backend()
    try:
        names = drop_lookup_indexes(backend) if drop else ensure_lookup_indexes(backend)
        engine = backend.dialect.name
    finally:
        backend.close()
    if json:
        print_json({"engine": engine, "dropped" if drop else "created": names})
        return
    verb = "dropped" if drop else "created"
    console.print(f"{verb} {len(names)} look-up index(es) on {engine}")


def _print_360(doc: dict[str, Any]) -> None:
    out = console.print
    title = doc["person_id"] or (doc["sources"][0]["ref"] if doc.get("sources") else "record")
    out(f"[bold]patient {title}[/] (workspace {doc['workspace']}, viewer {doc['viewer']})", highlight=False)
    if doc.get("note"):
        out(f"[yellow]{doc['note']}[/]", highlight=False)
    golden = doc.get("golden")
    if golden:
        print_table(
            f"golden record ({golden['record_count']} records)",
            ["field", "value", "from", "rule"],
            [
                [f, v["value"], f"{v['source']}:{v['patient_key']}" if v.get("source") else "", v.get("rule")]
                for f, v in golden["fields"].items()
            ],
        )
    if "identifiers" in doc:
        print_table(
            "identifiers",
            ["kind", "value", "system", "records"],
            [[i["kind"], i["value"], i.get("system"), ", ".join(i["records"])] for i in doc["identifiers"]],
        )
    if "sources" in doc:
        print_table(
            "sources",
            ["record", "rule", "match probability", "name", "sex", "birth date"],
            [
                [s["ref"], s["rule"], s["match_probability"], s["name"], s["sex"], s["birth_date"]]
                for s in doc["sources"]
            ],
        )
    _lists(doc)
    household = doc.get("household")
    if household:
        print_table(
            f"household {household['household_id']}",
            ["person", "role", "name", "sex", "born"],
            [
                [
                    m["person_id"] + (" (this person)" if m["is_self"] else ""),
                    m["role"],
                    m["name"],
                    m["sex"],
                    m["birth_year"],
                ]
                for m in household["members"]
            ],
        )
    if doc.get("history"):
        print_table(
            "identity history",
            ["at", "action", "actor", "reason"],
            [[h["at"], h["action"], h["actor"], h["reason"]] for h in doc["history"]],
        )


_LIST_COLUMNS: dict[str, tuple[str, ...]] = {
    "encounters": ("start", "encounter_class", "org_key", "reason_description"),
    "conditions": ("onset", "code", "description"),
    "prescriptions": ("written_at", "drug_name", "drug_class", "status"),
    "dispenses": ("dispensed_at", "drug_name", "channel", "days_supply"),
    "appointments": ("scheduled_at", "status", "channel", "department_key"),
    "events": ("occurred_at", "channel", "name"),
    "consents": ("recorded_at", "purpose", "status", "channel"),
    "messages": ("created_at", "channel", "status", "template"),
}


def _lists(doc: dict[str, Any]) -> None:
    sections: list[tuple[str, dict[str, Any]]] = []
    for section in (
        "encounters",
        "conditions",
        "medications",
        "appointments",
        "events",
        "consents",
        "messages",
    ):
        value = doc.get(section)
        if value is None:
            continue
        if section == "medications":
            sections.extend(value.items())
        else:
            sections.append((section, value))
    for name, lst in sections:
        if not lst["total"]:
            continue
        cols = _LIST_COLUMNS[name]
        print_table(
            f"{name} ({len(lst['items'])} of {lst['total']}, newest first)",
            ["record", *cols],
            [[f"{r['source']}:{r['patient_key']}", *(r[c] for c in cols)] for r in lst["items"]],
        )


def register(app: typer.Typer) -> None:
    app.add_typer(patient_app, name="patient")
