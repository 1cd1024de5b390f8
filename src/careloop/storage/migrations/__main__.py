"""`python -m careloop.storage.migrations new NAME`: write the next migration from the domain's drift."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from careloop.storage.migrations import load_migrations, snapshot, table_to_json
from careloop.storage.schema import all_tables


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "new":
        print("usage: python -m careloop.storage.migrations new NAME", file=sys.stderr)
        return 2
    migrations = load_migrations()
    current = snapshot(migrations)
    ops: dict[str, list[object]] = {"create_tables": [], "add_columns": []}
    for t in all_tables():
        if t.name not in current:
            ops["create_tables"].append(table_to_json(t))
            continue
        for c in t.columns:
            if c.name not in current[t.name]:
                ops["add_columns"].append({"table": t.name, "name": c.name, "type": c.type.value})
    if not any(ops.values()):
        print("schema matches the domain; no migration needed")
        return 0
    version = (migrations[-1].version if migrations else 0) + 1
    path = Path(__file__).parent / f"{version:04d}_{argv[1]}.json"
    path.write_text(json.dumps({k: v for k, v in ops.items() if v}, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
