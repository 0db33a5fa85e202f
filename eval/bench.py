"""`adafv bench` / `make bench`: where the time goes, measured side by side in one run (medians of repeats).

    preprocess      HF image processor (PIL backend)       vs  the runtime's numpy preprocessing
    vision          PyTorch (tower + selection, eager)     vs  the exported graph in ONNX Runtime
    LLM prefill     all N*P visual tokens                  vs  the `keep` AdaFV keeps          (same decoder)
    end to end      PyTorch reference, no reduction        vs  the bundle with AdaFV      (up to the same length)

Numbers are from whatever machine runs it; the speed claims in the README come from this command.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

PROMPT = "What is in the picture?"


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def run_bench(model: str, keep: int, repeats: int = 5, image_path: Path | None = None) -> tuple[list[tuple], dict]:
    import torch

    from adafv import AdaFVConfig
    from adafv.assets import path as asset
    from adafv.export.bundle import EngineConfig, build
    from adafv.pipeline import Reference
    from adafv.runtime import Pipeline, load_image
    from adafv.runtime.llm import Sampler
    from adafv.runtime.preprocess import preprocess

    image_path = image_path or asset("rocket.jpg")
    image = load_image(image_path)
    bundle = build(EngineConfig(model, AdaFVConfig(keep=keep)), progress=False).path
    pipe = Pipeline.load(bundle)
    reference = Reference.load(model)
    rows = []

    spec = pipe.manifest["preprocess"]
    rows.append(
        (
            "preprocess",
            "HF processor",
            _median_ms(lambda: reference.processor.image_processor(image), repeats),
            "runtime numpy",
            _median_ms(lambda: preprocess(image, spec), repeats),
        )
    )

    prepared = reference.prepare(image, PROMPT)
    pixels, grid = preprocess(image, spec)
    pre, post = pipe.prompt_ids(PROMPT)
    text = pipe.embed(post)

    def torch_vision():
        with torch.no_grad():
            tokens, saliency, relevance = reference.scores(prepared)
            from adafv.select import select

            select("adafv", saliency[None], relevance[None], keep, check=False)

    rows.append(
        (
            "vision + selection",
            "PyTorch eager",
            _median_ms(torch_vision, repeats),
            "ONNX Runtime graph",
            _median_ms(lambda: pipe.vision(pixels, text, grid), repeats),
        )
    )

    decoder = pipe._load_decoder()
    dim = pipe.manifest["vision"]["hidden_size"]
    num_visual = pixels.shape[0] * pipe.manifest["vision"]["patches_per_crop"]
    rng = np.random.default_rng(0)
    eos = set(pipe.manifest["tokenizer"]["eos_token_ids"])

    def prefill(visual_tokens: int):
        embeds = np.concatenate(
            [pipe.embed(pre), rng.standard_normal((visual_tokens, dim)).astype(np.float32) * 0.02, pipe.embed(post)]
        )
        return lambda: decoder.generate(embeds, pipe.embed_table, eos, 1, Sampler())

    rows.append(
        (
            "LLM prefill",
            f"{num_visual} visual tokens",
            _median_ms(prefill(num_visual), repeats),
            f"{keep} kept",
            _median_ms(prefill(keep), repeats),
        )
    )

    answer = pipe.run(image, PROMPT, max_new_tokens=16)
    facts = {
        "target": pipe.manifest["target"],
        "providers": answer["providers"],
        "host_bytes_per_decode_step": answer["host_bytes_per_decode_step"],
        "kv_cache_bytes": answer["kv_cache_bytes"],
    }
    n = max(len(answer["tokens"]), 1)
    rows.append(
        (
            f"end to end ({n} tokens)",
            "PyTorch, no reduction",
            _median_ms(lambda: reference.run(image, PROMPT, AdaFVConfig(keep=1, method="full"), n), repeats),
            f"bundle, AdaFV keep={keep}",
            _median_ms(lambda: pipe.run(image, PROMPT, max_new_tokens=n), repeats),
        )
    )
    return rows, facts


def print_table(rows: list[tuple], model: str, keep: int, facts: dict | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"adafv bench: {model}, keep={keep} (median ms)")
    for name in ("stage", "baseline", "ms", "adafv", "ms", "speed-up"):
        table.add_column(name, justify="right" if name in ("ms", "speed-up") else "left")
    for stage, a_name, a_ms, b_name, b_ms in rows:
        table.add_row(stage, a_name, f"{a_ms:.1f}", b_name, f"{b_ms:.1f}", f"{a_ms / b_ms:.2f}x")
    Console().print(table)
    if facts:
        p = facts["providers"]
        print(
            f"bundle target {facts['target']}; vision on {p['vision']}, decoder on {p['decoder']}; per decode step "
            f"{facts['host_bytes_per_decode_step']} bytes cross the host boundary (one embedding row in, the last "
            f"position's logits out); KV cache {facts['kv_cache_bytes'] / 1e6:.2f} MB for this answer"
        )
