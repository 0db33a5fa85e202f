"""The answer to one question about one image: the one schema of `adafv run --json`, the server's `adafv` field,
eval's answers and the bench. Both paths write it through `Answer`: the PyTorch reference (`adafv.pipeline`) and
the bundle (`adafv.runtime.pipeline`), so their keys cannot drift apart. Torch-free (the runtime imports it).

Keys every answer has, in this order: model, path ("reference" or "bundle"), method, mode, layout, keep, text,
tokens, kept_positions (crop-major, ascending), num_kept, num_visual_tokens (before selection),
num_llm_visual_tokens (what the LLM reads: kept tokens plus any row newlines), num_crops, grid, merged_grid (Qwen
only), then the path's own facts (the bundle's: bundle, engine, target, providers, stopped, prompt_tokens,
warmup_ms, host_bytes_per_decode_step, kv_cache_bytes), then timings_ms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PATHS = ("reference", "bundle")
BUNDLE_FACTS = ("bundle", "engine", "target", "providers", "stopped", "prompt_tokens", "warmup_ms",
                "host_bytes_per_decode_step", "kv_cache_bytes")  # fmt: skip
TIMINGS = {
    "reference": ("preprocess", "vision", "select", "generate", "total"),
    "bundle": ("preprocess", "vision", "prefill", "time_to_first_token", "decode", "decode_tokens_per_s", "total"),
}


@dataclass(frozen=True)
class Answer:
    model: str
    path: str
    method: str
    mode: str
    layout: str
    keep: int
    text: str
    tokens: list[int]
    kept_positions: list[int]
    num_visual_tokens: int
    num_llm_visual_tokens: int
    num_crops: int
    grid: list[int]
    timings_ms: dict[str, float | None]
    merged_grid: list[int] | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # the path's own (BUNDLE_FACTS for a bundle)

    def __post_init__(self):
        """A wrong answer is a bug of ours, not of the user's input: these are assertions with a message."""
        if self.path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {self.path!r}")
        if self.kept_positions and max(self.kept_positions) >= self.num_visual_tokens:
            raise ValueError(f"kept_positions must lie below {self.num_visual_tokens}")  # paper mode may pad with -1
        wanted = BUNDLE_FACTS if self.path == "bundle" else ()
        if sorted(self.facts) != sorted(wanted):
            raise ValueError(f"a {self.path} answer's facts are {list(wanted)}, got {sorted(self.facts)}")
        missing = [k for k in TIMINGS[self.path] if k not in self.timings_ms]
        if missing:
            raise ValueError(f"timings_ms lacks {missing}")

    @property
    def num_kept(self) -> int:
        return len(self.kept_positions)

    def to_dict(self) -> dict[str, Any]:
        out = {"model": self.model, "path": self.path, "method": self.method, "mode": self.mode,
               "layout": self.layout, "keep": self.keep, "text": self.text, "tokens": list(self.tokens),
               "kept_positions": list(self.kept_positions), "num_kept": self.num_kept,
               "num_visual_tokens": self.num_visual_tokens, "num_llm_visual_tokens": self.num_llm_visual_tokens,
               "num_crops": self.num_crops, "grid": list(self.grid)}  # fmt: skip
        if self.merged_grid is not None:
            out["merged_grid"] = list(self.merged_grid)
        return {**out, **self.facts, "timings_ms": dict(self.timings_ms)}
