"""Does a reduced-precision vision graph keep the same tokens? Measured against the FP32 graph on held-out feeds.

Per held-out image and as a mean: the kept positions' Jaccard overlap and recall (the share of the FP32 graph's
positions the reduced graph also keeps), the cosine similarity of the kept tokens at the shared positions, whether
greedy generation gives the same answer (the bundle's own decoder, 8 new tokens, from each graph's kept tokens),
and the vision latency ratio (FP32 / reduced, medians) and file-size ratio (reduced / FP32).

    adafv calib report BUNDLE [--reference BUNDLE] [--data FILE.jsonl]

Every int8 or fp16 build runs it and writes the numbers into the manifest (`calibration`); an int8 build fails when
the mean recall is under 0.9, unless `--allow-degraded`. Held-out items the engine cannot take are listed with their
reason and counted (`skipped`); a report left with fewer than `MIN_ITEMS` items fails (CalibrationError).

The report proves, it does not benchmark: each graph runs once per item; the first item's runs warm the sessions,
the next `timed` items are timed (`repeats` runs each, the first of them the one that gave the outputs); accuracy
rows cover every item.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from adafv.errors import CalibrationError
from adafv.runtime.contract import OUTPUTS, TOLERANCES

MIN_RECALL = TOLERANCES.int8_min_recall
ANSWER_TOKENS = 8
TIMED = 3  # items timed per report (each graph already warmed once)


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(session, feed: dict, name: str):
    from adafv.runtime.errors import EngineError, first_line

    try:
        return session.run(list(OUTPUTS), feed)
    except Exception as e:
        raise EngineError(f"ONNX Runtime failed running {name}: {first_line(e)}") from e


def _clocked(session, feed: dict, runs: int, name: str):
    """The outputs of `runs` runs (>= 1) and the median of their milliseconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        out = _run(session, feed, name)
        times.append((time.perf_counter() - start) * 1000)
    return out, statistics.median(times)


def _size(root: Path, name: str) -> int:
    return sum(p.stat().st_size for p in root.glob(name + "*") if p.is_file())


def compare(pipe, reduced: Path, reference: Path, chosen, repeats: int = 1, answers: bool = True,
            timed: int = TIMED, min_items: int | None = None,
            budget_s: float | None = None) -> dict[str, Any]:  # fmt: skip
    """The report for the graph file `reduced` against the FP32 graph file `reference`, on the items `chosen`
    (their feeds through `pipe`, a Pipeline over the bundle whose decoder and template answer). `budget_s`: stop
    after the item that would take the report past this many seconds (never before `min_items` items); the report
    says how many of the held-out items it covered (`heldout`), and `adafv calib report` covers them all."""
    from adafv.runtime.llm import Sampler

    from .data import MIN_ITEMS, prepared

    began = time.perf_counter()  # the budget counts everything the report does: feeds, sessions, the decoder
    min_items = MIN_ITEMS if min_items is None else min_items
    used, skipped = prepared(pipe, list(chosen))
    if len(used) < min_items:
        reasons = "; ".join(f"{Path(it.image).name}: {why}" for it, why in skipped[:3])
        raise CalibrationError(f"the report needs at least {min_items} held-out items the vision graph takes; got "
                               f"{len(used)} of {len(used) + len(skipped)}" + (f" ({reasons})" if reasons else ""))
    lo = _session(reduced)
    hi = _session(reference)
    decoder = pipe.decoder if answers else None
    eos = set(pipe.manifest["tokenizer"]["eos_token_ids"])
    rows = []
    for n, (item, feed) in enumerate(used):
        spent = time.perf_counter() - began
        if budget_s is not None and n >= max(min_items, 1) and spent + spent / n > budget_s:
            break  # the next item would not fit the budget (each so far cost spent / n, the set-up included)
        clock = 1 <= n <= timed  # the first item's run warms each session (allocations); the next `timed` are timed
        (t32, p32), ms32 = _clocked(hi, feed, repeats if clock else 1, reference.name)
        (tlo, plo), mslo = _clocked(lo, feed, repeats if clock else 1, reduced.name)
        a, b = set(p32[p32 >= 0].tolist()), set(plo[plo >= 0].tolist())
        shared = [i for i, p in enumerate(p32.tolist()) if p in b and p >= 0]
        where = {p: i for i, p in enumerate(plo.tolist())}
        x = t32[shared]
        y = tlo[[where[p32[i]] for i in shared]]
        cos = (x * y).sum(-1) / np.maximum(np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1), 1e-12)
        row = {
            "image": Path(item.image).name,
            "question": item.question,
            "jaccard": len(a & b) / max(len(a | b), 1),
            "recall": len(a & b) / max(len(a), 1),
            "cosine": float(cos.mean()) if len(shared) else 0.0,
            "vision_ms_fp32": ms32 if clock else None,
            "vision_ms": mslo if clock else None,
        }
        if decoder is not None:
            grid = tuple(feed.get("image_grid", (1, 1)))
            pre, post = pipe.prompt_ids(item.question)  # this item's own prompt, with this item's selection
            said = []
            for tokens, positions in ((t32, p32), (tlo, plo)):
                valid = positions >= 0
                visual = pipe.layout(positions[valid], tokens[valid], grid)
                embeds = np.concatenate([pipe.embed(pre), visual, pipe.embed(post)])
                said.append(decoder.generate(embeds, pipe.embed_table, eos, ANSWER_TOKENS, Sampler()).tokens)
            row["same_answer"] = said[0] == said[1]
        rows.append(row)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("jaccard", "recall", "cosine")}
    if answers:
        mean["answer_agreement"] = float(np.mean([r["same_answer"] for r in rows]))
    clocked = [r for r in rows if r["vision_ms"] is not None]
    mean["vision_speedup"] = (statistics.median(r["vision_ms_fp32"] for r in clocked)
                              / statistics.median(r["vision_ms"] for r in clocked)) if clocked else None  # fmt: skip
    mean["size_ratio"] = _size(reduced.parent, reduced.name) / max(_size(reference.parent, reference.name), 1)
    return {"images": len(rows), "heldout": len(used), "seconds": round(time.perf_counter() - began, 1),
            "budget_s": None if budget_s is None else round(budget_s, 1), "timed": len(clocked), "mean": mean,
            "per_image": rows, "min_recall": MIN_RECALL,
            "skipped": [{"image": Path(it.image).name, "question": it.question, "reason": why}
                        for it, why in skipped]}  # fmt: skip


def check_reference(pipe, other) -> None:
    """`--reference` must be a bundle of the same model and vision graph contract (else its graph cannot take this
    bundle's feeds, or compares apples with pears): one CalibrationError line naming what differs."""
    a, b = pipe.manifest, other.manifest
    facts = {
        "model": lambda m: m["model"]["name"],
        "keep": lambda m: m["selection"]["keep"],
        "method": lambda m: m["selection"]["method"],
        "hidden size": lambda m: m["vision"]["hidden_size"],
        "patches per crop": lambda m: m["vision"]["patches_per_crop"],
        "inputs": lambda m: sorted(m["vision"]["inputs"]),
        "preprocessing": lambda m: m["preprocess"],
    }
    differ = [name for name, get in facts.items() if get(a) != get(b)]
    if differ:
        first = differ[0]
        raise CalibrationError(f"--reference {other.root} is not a bundle of the same model and graph "
                               f"({', '.join(differ)} differ; {first}: {facts[first](b)!r:.60} vs "
                               f"{facts[first](a)!r:.60})")  # fmt: skip


def markdown(report: dict[str, Any], title: str) -> str:
    m = report["mean"]
    skipped = report.get("skipped", [])
    lines = [
        f"{title}: {report['images']} held-out images"
        + (f" of {report['heldout']} (the build's time budget)" if report.get("heldout", 0) > report["images"] else "")
        + (f", {len(skipped)} skipped" if skipped else ""),
        "",
        "| image | question | Jaccard | recall | cosine | same answer | vision ms (fp32 -> this) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["per_image"]:
        same = {True: "yes", False: "no"}.get(r.get("same_answer"), "–")
        ms = f"{r['vision_ms_fp32']:.0f} -> {r['vision_ms']:.0f}" if r["vision_ms"] is not None else "(not timed)"
        lines.append(f"| {r['image']} | {r['question']} | {r['jaccard']:.3f} | {r['recall']:.3f} | {r['cosine']:.4f} | "
                     f"{same} | {ms} |")  # fmt: skip
    agreement = f"{m['answer_agreement']:.0%}" if "answer_agreement" in m else "–"
    speed = f"{m['vision_speedup']:.2f}x faster" if m["vision_speedup"] is not None else "(not timed)"
    lines += [
        f"| **mean** | | {m['jaccard']:.3f} | {m['recall']:.3f} | {m['cosine']:.4f} | {agreement} | {speed} |",
        "",
        f"File size: {m['size_ratio']:.2f} of the fp32 graph's. Speed: the medians over {report.get('timed')} items "
        "(after one that warmed the sessions).",
    ]
    lines += [f"Skipped: {s['image']} ({s['question']}): {s['reason']}" for s in skipped]
    return "\n".join(lines) + "\n"
