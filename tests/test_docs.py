"""The docs describe the code as it is: docs/bundle.md's table names every file a real bundle holds, and each of its
rows names a file some bundle holds."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def documented() -> list[list[str]]:
    """docs/bundle.md's rows: the names (patterns) in the first cell of each."""
    rows = []
    for line in (ROOT / "docs" / "bundle.md").read_text().splitlines():
        if line.startswith("| `"):
            names = re.findall(r"`([^`]+)`", line.split("|")[1])
            rows.append([n.replace("<trt>-sm<cc>", "*").replace("(+", "") for n in names])
    return rows


def covered(rel: str, patterns: list[str]) -> bool:
    top = rel.split("/")[0] + "/" if "/" in rel else rel
    return any(fnmatch.fnmatch(rel, p) or p == top for p in patterns)


def test_the_bundle_table_is_what_bundles_hold(make_bundle):
    rows = documented()
    patterns = [p for row in rows for p in row]
    seen = set()
    for precision in ("fp32", "int8", "fp16"):
        bundle = make_bundle("toyworld-llava-next" if precision == "int8" else "tiny-llava-next", 64,
                             precision=precision).path  # fmt: skip
        files = [p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()]
        for rel in files:
            assert covered(rel, patterns), f"{rel} is in a bundle but not in docs/bundle.md"
            seen |= {p for p in patterns if covered(rel, [p])}
    missing = [p for p in patterns if p not in seen and "*" not in p]  # a TensorRT engine needs TensorRT
    assert missing == [], f"docs/bundle.md names files no bundle holds: {missing}"
