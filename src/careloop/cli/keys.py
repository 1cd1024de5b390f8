"""`careloop keys status|rotate|retire`: the field-encryption key ring and its rotation."""

from __future__ import annotations

import typer

from careloop.cli._common import JsonOpt, console, err_console, handle_errors, print_json, print_table
from careloop.cli._context import open_backend

keys_app = typer.Typer(help="Encryption keys: status, rotation, retiring old keys.", no_args_is_help=True)


@keys_app.command("status")
@handle_errors
def status(json: bool = JsonOpt) -> None:
    """Key ids, the active key and how many stored ciphertexts use each (every workspace)."""
    from careloop.privacy.rotation import key_status

    with open_backend() as backend:
        st = key_status(backend)
    if json:
        print_json(st)
        return
    print_table(
        f"key ring {st['key_ring']}",
        ["key id", "active", "ciphertexts"],
        [[k["id"], "yes" if k["active"] else "", f"{k['ciphertexts']:,}"] for k in st["keys"]],
    )
    console.print(f"audit checkpoint key: {st['audit_key']} ({st['audit_key_id']})", highlight=False)
    for kid, n in st["unknown_key_ids"].items():
        err_console.print(
            f"[bold red]{n:,} ciphertext(s) use key id {kid!r}, which is not in the key ring[/]: restore the "
            "key file that has it",
            highlight=False,
        )
    unfinished = [r for r in st["rotations"] if r["status"] == "running"]
    if unfinished:
        console.print(
            f"rotation {unfinished[0]['rotation_id']} to {unfinished[0]['to_key']} is unfinished: "
            "run `careloop keys rotate` to continue it",
            highlight=False,
        )


@keys_app.command("rotate")
@handle_errors
def rotate(
    batch_size: int = typer.Option(
        10_000, "--batch-size", min=1, help="ciphertexts re-encrypted per transaction"
    ),
    reencrypt_only: bool = typer.Option(
        False,
        "--reencrypt-only",
        help="add no key: re-encrypt everything to the ring's active key (a ring from CARELOOP_KEYS that you "
        "gave a new active key)",
    ),
    json: bool = JsonOpt,
) -> None:
    """Add a new key (made active), re-encrypt every encrypted column to it, verify none is left under an old
    key. Resumable: after an interruption, run it again. Old keys stay for decryption until `keys retire`."""
    from careloop.privacy.audit import cli_actor
    from careloop.privacy.rotation import KeyRotation

    def progress(col: object, n: int, total: int) -> None:
        if not json:
            console.print(
                f"  {getattr(col, 'name', col)}: {n:,} re-encrypted ({total:,} in all)", highlight=False
            )

    with open_backend() as backend:
        report = KeyRotation(backend, actor=cli_actor(), batch_size=batch_size, progress=progress).run(
            add_key=not reencrypt_only
        )
    if json:
        print_json(report.as_dict())
    else:
        verb = "resumed" if report.resumed else "started"
        console.print(
            f"rotation {report.rotation_id} ({verb}) to key {report.to_key}: {report.ciphertexts:,} ciphertexts "
            f"re-encrypted in {report.seconds:.1f} s; key ring {report.key_file}",
            highlight=False,
        )
        if report.status == "done":
            olds = ", ".join(report.from_keys) or "none"
            console.print(
                f"[green]done[/]: every ciphertext uses {report.to_key}. Back up the key file now. Old keys "
                f"({olds}) stay for decryption: restart running careloop processes (serve, worker), then "
                "`careloop keys retire KEY_ID`",
                highlight=False,
            )
    if report.status != "done":
        left = ", ".join(f"{k} {n:,}" for k, n in report.remaining.items())
        err_console.print(
            f"[bold red]not finished[/]: ciphertexts under other keys remain ({left}) — a careloop process "
            "still running with the old key ring wrote them. Restart it, then run `careloop keys rotate` again",
            highlight=False,
        )
        raise typer.Exit(1)


@keys_app.command("retire")
@handle_errors
def retire(
    key_id: str = typer.Argument(..., metavar="KEY_ID", help="the old key to remove from the ring"),
    json: bool = JsonOpt,
) -> None:
    """Remove an old key from the ring; refused while any ciphertext still uses it."""
    from careloop.privacy.audit import cli_actor
    from careloop.privacy.rotation import retire_key

    with open_backend() as backend:
        out = retire_key(backend, key_id, actor=cli_actor())
    if json:
        print_json(out)
        return
    console.print(
        f"retired {out['retired']}: the key ring ({out['key_file']}) now holds {', '.join(out['keys'])} "
        f"(active {out['active']}). Replace your key-file backup with this one",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
