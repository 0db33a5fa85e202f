"""Where a vision graph's time goes, from ONNX Runtime's own profiler (`SessionOptions.enable_profiling`): one
request's kernels summed per op type, per execution provider, and the selection's nodes (by the exporter's
metadata, calib/regions.py) apart from the tower's. `adafv bench` writes it for the graph the runtime runs, so a
slow stage names its kernels (on a GPU: which ops run on the CUDA provider, which fell back to the CPU).

The profile covers a second run of a fresh session (the first, with its allocations and kernel selection, is
`first_run_ms`); ONNX Runtime's optimiser fuses some nodes under new names, whose time is counted as the tower's
unless the fused name keeps a selection node's name ("unattributed" says how many kernels had no graph node).
"""

from __future__ import annotations

import collections
import json
import tempfile
import time
from pathlib import Path
from typing import Any

TOP = 12  # op types listed by time


def selection_nodes(path: Path) -> set[str]:
    """Names of the graph's nodes traced from the selection modules (adafv.calib.regions)."""
    import onnx

    from adafv.calib.regions import in_selection

    model = onnx.load(str(path), load_external_data=False)
    return {n.name for n in model.graph.node if in_selection(n)}


def summarize(events: list[dict], selection: set[str] | None = None, graph_nodes: set[str] | None = None) -> dict:
    """ONNX Runtime's trace events -> the last run's kernels summed per op type and per provider (ms), and the
    selection's share. `selection`: node names of the selection; `graph_nodes`: every node name of the graph."""
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    if not runs:
        raise ValueError("the profile holds no model_run event")
    last = runs[-1]
    begin, end = last["ts"], last["ts"] + last["dur"]
    kernels = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
               and begin <= e["ts"] <= end]  # fmt: skip
    by_op: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    by_provider: dict[str, float] = collections.defaultdict(float)
    chosen = unattributed = 0.0
    for e in kernels:
        node = e["name"][: -len("_kernel_time")]
        args = e.get("args", {})
        ms = e["dur"] / 1000
        by_op[args.get("op_name", "?")][0] += ms
        by_op[args.get("op_name", "?")][1] += 1
        by_provider[args.get("provider", "?")] += ms
        if selection and (node in selection or any(node.startswith(s + "_") for s in selection)):
            chosen += ms
        if graph_nodes is not None and node not in graph_nodes:
            unattributed += 1
    total = sum(v[0] for v in by_op.values())
    ops = sorted(({"op": op, "ms": round(ms, 3), "kernels": int(n), "share": round(ms / total, 4) if total else 0}
                  for op, (ms, n) in by_op.items()), key=lambda r: -r["ms"])  # fmt: skip
    return {
        "run_ms": round(last["dur"] / 1000, 3),
        "kernels_ms": round(total, 3),
        "kernels": len(kernels),
        "ops": ops[:TOP],
        "op_types": sorted(by_op),
        "other_ops_ms": round(sum(r["ms"] for r in ops[TOP:]), 3),
        "providers_ms": {p: round(v, 3) for p, v in sorted(by_provider.items(), key=lambda kv: -kv[1])},
        "selection_ms": round(chosen, 3),
        "selection_share": round(chosen / total, 4) if total else 0.0,
        "unattributed_kernels": int(unattributed),
    }


def profile(path: Path, feeds: dict, providers: list | None = None) -> dict[str, Any]:
    """Profile one request of the graph at `path` on `providers` (default the CPU): a fresh session runs `feeds`
    twice (the profiler traces both) and the second run is summarised; the first run's wall time is reported."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="adafv-profile-") as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "vision")
        session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
        start = time.perf_counter()
        session.run(None, feeds)
        first = (time.perf_counter() - start) * 1000
        session.run(None, feeds)
        trace = Path(session.end_profiling())
        events = json.loads(trace.read_text())
        session = None
    nodes = {n.name for n in onnx.load(str(path), load_external_data=False).graph.node}
    out = summarize(events, selection_nodes(path), nodes)
    return {"graph": Path(path).name, "first_run_ms": round(first, 3), **out}


def markdown_lines(p: dict[str, Any]) -> list[str]:
    """The profile as a table (bench.md)."""
    providers = ", ".join(f"{name} {ms:.1f} ms" for name, ms in p["providers_ms"].items())
    lines = [
        f"ONNX Runtime's profiler, one request of {p['graph']} (second run of a fresh session: {p['run_ms']:.1f} ms; "
        f"the first took {p['first_run_ms']:.1f} ms): {p['kernels']} kernels, {p['kernels_ms']:.1f} ms; by provider: "
        f"{providers}; the selection's nodes {p['selection_ms']:.1f} ms ({p['selection_share']:.1%}).",
        "",
        "| op type | ms | kernels | share |",
        "|---|---|---|---|",
        *[f"| {r['op']} | {r['ms']:.2f} | {r['kernels']} | {r['share']:.1%} |" for r in p["ops"]],
    ]
    if p["other_ops_ms"]:
        lines.append(f"| other | {p['other_ops_ms']:.1f} | | |")
    return [*lines, ""]
