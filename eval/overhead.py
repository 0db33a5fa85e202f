"""What the selection costs inside a Qwen vision graph, measured in isolation (`adafv bench`, Qwen shapes).

Timing the whole vision graph against the tower without the selection is a difference of two numbers of seconds
each, and on a small CPU two sessions of one graph already differ by 8-19%: the difference says nothing below that.
So the parts that differ are timed on their own, at the bundle's real shapes, side by side (interleaved, many
repeats, medians):

    plain      the saliency block's attention as the tower without the selection runs it: qkv, rotary, SDPA, proj
    global     the same block as the vision graph runs it: GlobalAttention (qkv, rotary, float32 softmax in query
               blocks, the column sums) + proj, and the saliency summed per merge unit back in raster order
    select     the selection alone: relevance against the question's embeddings, the adaptive split, top-k, gather

The vision graph is the tower with `plain` replaced by `global`, followed by `select`; everything else is the same
operators on the same tensors. So the selection's overhead is (global - plain) + select, reported as a share of the
tower without the selection (timed whole, as the bench does).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

PARTS = ("plain", "global", "select")
ROUNDS = 20  # interleaved rounds the bench times (about 1.5 min at 1280x720 on 2 cores)


def graphs(loaded, resolution: tuple[int, int], config, text: int, folder: Path) -> dict[str, tuple[Path, dict]]:
    """Export the three parts of `loaded`'s Qwen tower at `resolution` (height, width) as float32 ONNX graphs in
    `folder` -> {part: (path, feeds)}. `config`: the bundle's AdaFVConfig; `text`: question tokens fed to select."""
    import torch
    from torch import nn

    from adafv.export.graph import export_module
    from adafv.vision import SelectTokens

    visual = loaded.arch.graph_visual(loaded.model, resolution).float().eval()
    tokens, grid = visual.tokens, visual.grid  # QwenVisualTokens, (rows, cols) of patches
    rows, cols = grid
    N, C, P = rows * cols, tokens.blocks[0].attn.qkv.in_features, rows * cols // tokens.unit
    D = loaded.config.text_config.hidden_size
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        h = torch.randn((N, C), generator=g)  # (N, C) the block's normed input, window order
        cos, sin = tokens.rotary(h, torch.from_numpy(tokens.layout(grid)[3]))  # (N, E) each
        merged = torch.randn((1, P, D), generator=g)  # (1, P, D) the merger's tokens
        saliency = torch.softmax(torch.randn((1, P), generator=g), -1)  # (1, P)
        question = torch.randn((text, D), generator=g) * 0.02  # (T, D)

    class Attention(nn.Module):
        def __init__(self, saliency: bool):
            super().__init__()
            self.tokens, self.saliency = tokens, saliency

        def forward(self, h, cos, sin):
            return self.tokens.saliency_attention(h, cos, sin, grid, self.saliency)

    class Select(nn.Module):
        def __init__(self):
            super().__init__()
            self.select = SelectTokens(config, None)

        def forward(self, tokens, saliency, text_embeds):
            return self.select(tokens, saliency, text_embeds)

    folder.mkdir(parents=True, exist_ok=True)
    block = {"h": h, "cos": cos, "sin": sin}
    parts = {
        "plain": (Attention(False), block, ["out"]),
        "global": (Attention(True), block, ["out", "saliency"]),
        "select": (Select(), {"tokens": merged, "saliency": saliency, "text_embeds": question},
                   ["kept_tokens", "kept_order"]),
    }  # fmt: skip
    out = {}
    for name, (module, feeds, outputs) in parts.items():
        path = folder / f"{name}.onnx"
        export_module(module, tuple(feeds.values()), list(feeds), outputs, path)
        out[name] = (path, {k: v.numpy() for k, v in feeds.items()})
    return out


def measure(parts: dict[str, tuple[Path, dict]], repeats: int, providers=None) -> dict[str, list[float]]:
    """Milliseconds of each part, `repeats` rounds, the parts interleaved within a round (one warm-up round)."""
    import onnxruntime as ort

    sessions = {name: (ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"]), feeds)
                for name, (path, feeds) in parts.items()}  # fmt: skip
    samples: dict[str, list[float]] = {name: [] for name in sessions}
    for round_ in range(repeats + 1):
        for name, (session, feeds) in sessions.items():
            start = time.perf_counter()
            session.run(None, feeds)
            if round_:
                samples[name].append((time.perf_counter() - start) * 1000)
    return samples


def summary(samples: dict[str, list[float]], tower_ms: float) -> dict[str, Any]:
    """The overhead: the median of the rounds' (global - plain) + the median select, and its share of the tower."""
    med = {name: float(statistics.median(samples[name])) for name in PARTS}
    # the attentions' difference round by round (each pair ran back to back): its median and spread
    diffs = [g - p for g, p in zip(samples["global"], samples["plain"])]
    q1, q3 = np.percentile(diffs, [25, 75])
    attention = float(statistics.median(diffs))
    overhead = attention + med["select"]
    return {
        **{f"{name}_ms": med[name] for name in PARTS},
        "global_minus_plain_ms": attention,
        "global_minus_plain_iqr_ms": [float(q1), float(q3)],
        "overhead_ms": overhead,
        "tower_ms": tower_ms,
        "share_of_tower": overhead / tower_ms,
        "rounds": len(samples["plain"]),
    }


def tower_session(loaded, spec: dict, folder: Path, providers=None):
    """ONNX Runtime session over the vision graph minus the selection, for a bundle's preprocess `spec` (its
    manifest's; a fixed-resolution one for Qwen): exported once, cached in `folder`."""
    import onnxruntime as ort

    from adafv.export.bundle import graph_shapes
    from adafv.export.graph import TowerGraph, export_tower
    from adafv.runtime.preprocess import value_table

    path = folder / "tower.onnx"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        resolution = (spec["resolution"]["height"], spec["resolution"]["width"]) if "resolution" in spec else None
        visual = loaded.arch.graph_visual(loaded.model, resolution).float()
        shapes = graph_shapes(loaded.arch, loaded.config, None, 8, resolution)
        export_tower(TowerGraph(visual, value_table(spec)), shapes, path)
    return ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])


def run(shapes: str, resolution: tuple[int, int] | None, keep: int, rounds: int = ROUNDS, tower_repeats: int = 3,
        providers=None) -> dict[str, Any]:  # fmt: skip
    """The isolated measurement alone, without a bundle: the parts and the tower without selection at `shapes`'
    Qwen tower and `resolution` (height, width; default the processor's VGA size), medians in one report."""
    from adafv import AdaFVConfig
    from adafv.export.bundle import graph_shapes
    from adafv.export.preprocess_spec import image_processor_spec
    from adafv.models import load

    from .shapes import cache_dir, checkpoint
    from .timing import machine, times

    loaded = load(checkpoint(shapes))
    resolution = graph_shapes(loaded.arch, loaded.config, None, 8, resolution).image_hw  # checked, defaulted
    spec = image_processor_spec(loaded.processor, resolution)
    folder = cache_dir() / "towers" / f"{shapes}-{resolution[1]}x{resolution[0]}"
    parts = graphs(loaded, resolution, AdaFVConfig(keep=keep), 16, folder / f"parts-k{keep}")
    samples = measure(parts, rounds, providers)
    parts = None
    tower = tower_session(loaded, spec, folder, providers)
    pixels = np.random.default_rng(0).integers(0, 256, (1, 3, *resolution), dtype=np.uint8)
    samples["tower without selection"] = times(lambda: tower.run(None, {"pixel_values": pixels}), tower_repeats)
    out = summary(samples, float(statistics.median(samples["tower without selection"])))
    return {"shapes": shapes, "resolution": list(resolution), "keep": keep, "machine": machine(), **out,
            "samples_ms": samples}  # fmt: skip


def main(argv=None) -> int:
    """python -m adafv.eval.overhead --shapes qwen2.5-vl-0.5b [--resolution 1288x728] --out DIR"""
    import argparse
    import json

    from adafv.errors import AdafvError

    parser = argparse.ArgumentParser(prog="python -m adafv.eval.overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="qwen2.5-vl-0.5b")
    parser.add_argument("--resolution", default=None, help="WIDTHxHEIGHT (multiples of 28); default 644x476")
    parser.add_argument("--keep", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--tower-repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if not args.shapes.startswith(("qwen", "tiny-qwen")):
            raise AdafvError(f"the isolated measurement is for Qwen shapes, not {args.shapes}")
        resolution = None
        if args.resolution:
            width, height = (int(v) for v in args.resolution.lower().split("x"))
            resolution = (height, width)
        report = run(args.shapes, resolution, args.keep, args.rounds, args.tower_repeats)
    except (AdafvError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overhead.json").write_text(json.dumps(report, indent=2))
    text = markdown(report)
    (args.out / "overhead.md").write_text(text)
    print(text)
    return 0


def markdown(report: dict[str, Any]) -> str:
    """overhead.md: the standalone measurement, its machine and the command that reproduces it."""
    (height, width), m = report["resolution"], report["machine"]
    ort = m.get("onnxruntime") or m.get("onnxruntime-gpu")
    repeats = len(report["samples_ms"]["tower without selection"])
    head = [
        f"# The selection's overhead: {report['shapes']} at {width}x{height}, keep {report['keep']}",
        "",
        f"Machine: {m.get('cpu', m['machine'])}; onnxruntime {ort}. The tower without selection: {repeats} repeats.",
        "",
    ]
    command = (
        f"python -m adafv.eval.overhead --shapes {report['shapes']} --resolution {width}x{height} "
        f"--keep {report['keep']} --rounds {report['rounds']} --out DIR"
    )
    return "\n".join([*head, *markdown_lines(report), f"Reproduce: `{command}`", ""])


def markdown_lines(o: dict[str, Any]) -> list[str]:
    """The measurement in words (bench.md's paragraph, and overhead.md)."""
    low, high = o["global_minus_plain_iqr_ms"]
    return [
        f"The selection's cost, its parts timed alone at the bundle's shapes ({o['rounds']} interleaved rounds, "
        f"medians): the saliency block's attention {o['plain_ms']:.1f} ms as the tower without selection runs it, "
        f"{o['global_ms']:.1f} ms as the vision graph runs it (exact global attention: float32 softmax in query "
        f"blocks, column sums), a difference of {o['global_minus_plain_ms']:.1f} ms (interquartile {low:.1f} to "
        f"{high:.1f}); the selection itself (relevance, split, top-k, gather) {o['select_ms']:.1f} ms. Overhead "
        f"**{o['overhead_ms']:.1f} ms, {o['share_of_tower']:.2%} of the tower** ({o['tower_ms']:.0f} ms without "
        "selection).",
        "",
    ]


if __name__ == "__main__":
    sys.exit(main())
