"""Does a reduced-precision vision graph keep the same tokens? Measured against the FP32 graph on held-out feeds.

Per held-out image and as a mean: the kept positions' Jaccard overlap and recall (the share of the FP32 graph's
positions the reduced graph also keeps), the cosine similarity of the kept tokens at the shared positions, whether
greedy generation gives the same answer (the bundle's own decoder, 8 new tokens, from each graph's kept tokens),
and the vision latency ratio (FP32 / reduced, medians) and file-size ratio (reduced / FP32).

    adafv calib report BUNDLE [--reference BUNDLE] [--data FILE.jsonl]

Every int8 or fp16 build runs it and writes the numbers into the manifest (`calibration`); an int8 build fails when
the mean recall is under 0.9, unless `--allow-degraded`.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

MIN_RECALL = 0.9
ANSWER_TOKENS = 8


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _timed(session, feed: dict, repeats: int) -> tuple[list[np.ndarray], float]:
    out = session.run(["kept_tokens", "kept_positions"], feed)  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(["kept_tokens", "kept_positions"], feed)
        times.append((time.perf_counter() - start) * 1000)
    return out, statistics.median(times)


def _size(root: Path, name: str) -> int:
    return sum(p.stat().st_size for p in root.glob(name + "*") if p.is_file())


def compare(pipe, reduced: Path, reference: Path, chosen, repeats: int = 1, answers: bool = True) -> dict[str, Any]:
    """The report for the graph file `reduced` against the FP32 graph file `reference`, on the items `chosen`
    (their feeds through `pipe`, a Pipeline over the bundle whose decoder and template answer)."""
    from adafv.runtime.llm import Sampler

    from .data import feeds

    lo = _session(reduced)
    hi = _session(reference)
    decoder = pipe._load_decoder() if answers else None
    eos = set(pipe.manifest["tokenizer"]["eos_token_ids"])
    rows = []
    for item, feed in zip(chosen, feeds(pipe, chosen)):
        (t32, p32), ms32 = _timed(hi, feed, repeats)
        (tlo, plo), mslo = _timed(lo, feed, repeats)
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
            "vision_ms_fp32": ms32,
            "vision_ms": mslo,
        }
        if decoder is not None:
            grid = tuple(feed.get("image_grid", (1, 1)))
            pre, post = pipe.prompt_ids(item.question)
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
    mean["vision_speedup"] = statistics.median(r["vision_ms_fp32"] for r in rows) / statistics.median(
        r["vision_ms"] for r in rows
    )
    mean["size_ratio"] = _size(reduced.parent, reduced.name) / max(_size(reference.parent, reference.name), 1)
    return {"images": len(rows), "mean": mean, "per_image": rows, "min_recall": MIN_RECALL}


def markdown(report: dict[str, Any], title: str) -> str:
    m = report["mean"]
    lines = [
        f"{title}: {report['images']} held-out images",
        "",
        "| image | question | Jaccard | recall | cosine | same answer | vision ms (fp32 -> this) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["per_image"]:
        same = {True: "yes", False: "no"}.get(r.get("same_answer"), "–")
        lines.append(f"| {r['image']} | {r['question']} | {r['jaccard']:.3f} | {r['recall']:.3f} | {r['cosine']:.4f} | "
                     f"{same} | {r['vision_ms_fp32']:.0f} -> {r['vision_ms']:.0f} |")  # fmt: skip
    agreement = f"{m['answer_agreement']:.0%}" if "answer_agreement" in m else "–"
    lines += [
        f"| **mean** | | {m['jaccard']:.3f} | {m['recall']:.3f} | {m['cosine']:.4f} | {agreement} | "
        f"{m['vision_speedup']:.2f}x faster |",
        "",
        f"File size: {m['size_ratio']:.2f} of the fp32 graph's.",
    ]
    return "\n".join(lines) + "\n"
