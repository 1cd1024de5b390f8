"""`careloop identity report`: the quality report of identity resolution (see docs/identity-report.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from careloop.cli._common import JsonOpt, console, handle_errors, print_json, print_table
from careloop.cli._context import open_backend, workspace_name

_BAR_WIDTH = 30


def _bar(value: float, largest: float) -> str:
    return "█" * max(1 if value else 0, round(_BAR_WIDTH * value / largest)) if largest else ""


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else ""


def _prob(p: float | None) -> str:
    return "" if p is None else f"{p:.4f}"


def _sci(v: float | None) -> str:
    return "" if v is None else f"{v:.3g}"


def add_report_command(identity: typer.Typer) -> None:
    """Register `report` on the `careloop identity` group."""

    @identity.command("report")
    @handle_errors
    def report(
        workspace: str | None = typer.Option(
            None, "--workspace", "-w", help="workspace (default: configured)"
        ),
        truth: Path | None = typer.Option(
            None,
            "--truth",
            help="true person per record: truth/identity.parquet of `careloop synth`, or a CSV / Parquet "
            "with source, patient_key, person_id — adds pairwise precision, recall and F1",
        ),
        json: bool = JsonOpt,
    ) -> None:
        """Quality of identity resolution: cluster sizes, rules, sources, match weights, households; --truth scores it."""
        from careloop.identity.report import build_report

        backend = open_backend()
        try:
            out = build_report(backend.workspace(workspace_name(workspace), create=False), truth)
        finally:
            backend.close()
        if json:
            print_json(out)
        else:
            render(out)


def render(r: dict[str, Any]) -> None:
    """The report as rich tables."""
    run = r["run"]
    if run:
        console.print(
            f"identity report of workspace [bold]{r['workspace']}[/] — latest run {run['run_id']} "
            f"({run.get('mode') or 'full'}, finished {run.get('finished_at') or '—'})",
            highlight=False,
        )
    print_table(
        "persons",
        ["records", "persons", "records per person", "largest cluster", "golden records"],
        [
            (
                f"{r['records']:,}",
                f"{r['persons']:,}",
                r["records_per_person"],
                r["largest_cluster"],
                f"{r['golden_records']:,}",
            )
        ],
    )
    sizes = r["cluster_sizes"]
    top = max((s["persons"] for s in sizes), default=0)
    print_table(
        "cluster sizes (records per person)",
        ["size", "persons", "records", "share of persons", ""],
        [
            (
                s["size"],
                f"{s['persons']:,}",
                f"{s['records']:,}",
                _pct(s["persons"], r["persons"]),
                _bar(s["persons"], top),
            )
            for s in sizes
        ],
    )
    print_table(
        "links by rule",
        ["rule", "records", "persons", "min probability", "mean probability"],
        [
            (
                x["rule"],
                f"{x['records']:,}",
                f"{x['persons']:,}",
                _prob(x["min_probability"]),
                _prob(x["mean_probability"]),
            )
            for x in r["links_by_rule"]
        ],
    )
    print_table(
        "sources",
        ["source", "records", "persons"],
        [(s["source"], f"{s['records']:,}", f"{s['persons']:,}") for s in r["sources"]],
    )
    print_table(
        "sources per person",
        ["sources", "persons", "share"],
        [
            (s["sources"], f"{s['persons']:,}", _pct(s["persons"], r["persons"]))
            for s in r["sources_per_person"]
        ],
    )
    _overlap(r)
    hist = r["match_probability"]
    top = max((b["links"] for b in hist["bins"]), default=0)
    print_table(
        f"match probability of probabilistic links ({hist['links']:,})",
        ["from", "to", "links", ""],
        [(b["from"], b["to"], f"{b['links']:,}", _bar(b["links"], top)) for b in hist["bins"]],
    )
    _weights(r["match_weights"])
    _households(r["households"])
    if r["truth"]:
        _truth(r["truth"])


def _overlap(r: dict[str, Any]) -> None:
    """Persons in both sources, as a matrix (upper triangle; columns numbered like the rows)."""
    names = [s["source"] for s in r["sources"]]
    persons = {s["source"]: s["persons"] for s in r["sources"]}
    both = {(o["source_a"], o["source_b"]): o["persons"] for o in r["source_overlap"]}
    rows = []
    for i, a in enumerate(names):
        cells = [
            f"{persons[a]:,}" if j == i else (f"{both.get((a, b), 0):,}" if j > i else "")
            for j, b in enumerate(names)
        ]
        rows.append([f"{i + 1} {a}", *cells])
    print_table(
        "source overlap: persons in both sources (diagonal: persons in the source)",
        ["source", *(str(i + 1) for i in range(len(names)))],
        rows,
    )


def _weights(w: dict[str, Any] | None) -> None:
    if w is None:
        console.print("no trained model recorded (identity_run.model is empty): no match weights")
        return
    prior = w["prior"]
    rows: list[tuple[Any, ...]] = [
        (
            "prior",
            "two random records match",
            _sci(prior["probability_two_random_records_match"]),
            "",
            prior["match_weight"],
            "",
        )
    ]
    weights = [
        abs(lvl["match_weight"])
        for c in w["comparisons"]
        for lvl in c["levels"]
        if lvl["match_weight"] is not None
    ]
    top = max(weights, default=0)
    for c in w["comparisons"]:
        for lvl in c["levels"]:
            mw = lvl["match_weight"]
            bar = "" if mw is None else ("+" if mw >= 0 else "−") + _bar(abs(mw), top)
            rows.append((c["comparison"], lvl["level"], _sci(lvl["m"]), _sci(lvl["u"]), mw, bar))
    print_table(
        f"match weights, log2(m/u), of run {w['run_id']}",
        ["comparison", "level", "m", "u", "weight", ""],
        rows,
    )


def _households(h: dict[str, Any] | None) -> None:
    if h is None:
        console.print("no households recorded")
        return
    console.print(f"households: {h['households']:,}, with {h['persons']:,} persons", highlight=False)
    print_table(
        "household sizes",
        ["members", "households"],
        [(s["size"], f"{s['households']:,}") for s in h["sizes"]],
    )
    print_table(
        "household roles", ["role", "persons"], [(x["role"], f"{x['persons']:,}") for x in h["roles"]]
    )


def _truth(t: dict[str, Any]) -> None:
    print_table(
        f"against the truth in {t['file']}",
        [
            "precision",
            "recall",
            "F1",
            "false-merge pairs",
            "missed-link pairs",
            "records scored",
            "not in truth",
            "truth not resolved",
        ],
        [
            (
                f"{t['precision']:.4f}",
                f"{t['recall']:.4f}",
                f"{t['f1']:.4f}",
                f"{t['false_merge_pairs']:,}",
                f"{t['missed_link_pairs']:,}",
                f"{t['records_scored']:,}",
                f"{t['records_without_truth']:,}",
                f"{t['truth_records_not_resolved']:,}",
            )
        ],
    )
    pairs = t["by_source_pair"]
    if pairs:
        shown = pairs[:20]
        print_table(
            "errors by source pair"
            + (f" (worst 20 of {len(pairs)}; all in --json)" if len(pairs) > 20 else ""),
            ["source", "source", "false merges", "missed links", "true pairs"],
            [
                (
                    p["source_a"],
                    p["source_b"],
                    f"{p['false_merge_pairs']:,}",
                    f"{p['missed_link_pairs']:,}",
                    f"{p['true_pairs']:,}",
                )
                for p in shown
            ],
        )
