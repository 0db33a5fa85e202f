"""Timing, and the machine a figure belongs to: what `adafv bench` and its isolated parts (overhead.py) share."""

from __future__ import annotations

import platform
import statistics
import time
from importlib import metadata
from typing import Any


def times(fn, repeats: int, warmup: bool = True) -> list[float]:
    """Milliseconds of `repeats` calls of fn (after one unmeasured call)."""
    if warmup:
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def median(samples: list[float]) -> float:
    return float(statistics.median(samples))


def machine() -> dict[str, Any]:
    """The machine a figure belongs to: the CPU with its family, model and the instruction sets ONNX Runtime's
    kernels use (adafv.runtime.cpu), Python and the packages' versions."""
    import os

    from adafv.runtime.cpu import cpu, describe

    facts = cpu()
    info = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "cpu": describe(facts), "cpu_facts": facts}  # fmt: skip
    for dist in ("adafv", "torch", "transformers", "onnxruntime", "onnxruntime-gpu", "onnxruntime-genai",
                 "onnxruntime-genai-cuda", "numpy", "pillow"):  # fmt: skip
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return info
