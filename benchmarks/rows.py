"""How the row-per-size benchmarks (allocator, planner) print their figures."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


def print_rows(rows: Sequence[Mapping[str, Any]], *, as_json: bool, footer: str) -> None:
    """The rows as JSON, or as a markdown table followed by `footer` (the targets)."""
    if as_json:
        print(json.dumps(list(rows), indent=2))
        return
    columns = list(rows[0])
    print(" | ".join(columns))
    print(" | ".join("---" for _ in columns))
    for row in rows:
        print(" | ".join(str(row[c]) for c in columns))
    print(footer)
