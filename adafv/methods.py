"""The selection methods by name: one registry and the one dispatcher (torchao's config -> handler is the model).

Each `Method` says what it reads (`scores`: the two cues, saliency (B, N, P) and relevance (B, N*P); `tokens`: the
projected visual tokens (B, N*P, D); `tower`: the tower's features and keys before the projector, for a method that
merges), whether it compiles into a vision graph with a fixed keep, and where its function lives. Everything that
chooses by name goes through here: `select` (eager, checked), `positions` (traceable: the vision graph's
`SelectTokens`), the reference pipeline, `adafv show`, the CLI's choices and `AdaFVConfig`'s validation. Importing
this module is light (no torch): functions are imported on first use.

A new method is one entry here and one function with the selection contract (docs/method.md).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from .errors import ConfigError, ScoreError


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    reads: str  # "scores" | "tokens" | "tower"
    compilable: bool  # into a vision graph with a fixed keep
    function: str  # "module:attribute" under adafv
    cue: str = "kept"  # how `adafv show` frames what it keeps: saliency | relevance | kept
    description: str = ""

    @property
    def merges(self) -> bool:
        """Merges features before the projector rather than choosing positions (its own graph module)."""
        return self.reads == "tower"

    @property
    def needs_relevance(self) -> bool:
        return self.name in ("adafv", "text")

    def load(self):
        module, _, attribute = self.function.partition(":")
        return getattr(importlib.import_module(f"adafv.{module}"), attribute)


REGISTRY: dict[str, Method] = {
    m.name: m
    for m in [
        Method("adafv", "scores", True, "select:adafv_positions", "both", "saliency + text relevance, adaptive split"),
        Method("fastervlm", "scores", True, "baselines:fastervlm_positions", "saliency", "[CLS] saliency, per crop"),
        Method("text", "scores", True, "baselines:text_positions", "relevance", "text relevance only"),
        Method("dart", "tokens", True, "baselines:dart_positions", "kept", "pivots + least-duplicated tokens"),
        Method("divprune", "tokens", True, "baselines:divprune_positions", "kept", "max-min diversity"),
        Method("visionzip", "tower", True, "baselines:visionzip", "saliency", "dominant + merged contextual tokens"),
        Method("random", "scores", False, "baselines:random_positions", "kept", "seeded uniform draw"),
        Method("full", "scores", False, "baselines:full_positions", "kept", "no reduction"),
    ]
}
NAMES = tuple(REGISTRY)
COMPILABLE = tuple(name for name, m in REGISTRY.items() if m.compilable)


def get(name: str) -> Method:
    if name not in REGISTRY:
        raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def positions(name: str, saliency, relevance, keep: int, *, tokens=None, mode: str = "exact",
              legacy_offset: bool = False, seed: int = 0):  # fmt: skip
    """The traceable core: (B, N, P), (B, N*P) [, tokens (B, N*P, D)] -> (B, keep) int64, no validation. Requires
    keep < N*P. For a method that merges, use its own function (`adafv.vision.ZipTokens`)."""
    method = get(name)
    fn = method.load()
    if method.merges:
        raise ConfigError(f"{name} merges tokens rather than choosing them: call adafv.baselines.visionzip with the "
                          "tower's features and keys (adafv.vision.VisualTokens.hidden)")  # fmt: skip
    if name == "adafv":
        return fn(saliency, relevance, keep, mode=mode, legacy_offset=legacy_offset)
    if method.reads == "tokens":
        return fn(tokens, keep)
    if name == "random":
        return fn(saliency, relevance, keep, seed=seed)
    return fn(saliency, relevance, keep)


def select(name: str, saliency, relevance, keep: int, *, mode: str = "exact", legacy_offset: bool = False,
           seed: int = 0, check: bool = True, tokens=None) -> Any:  # fmt: skip
    """Eager selection by name, checked: the contract of `adafv.select_tokens` ((B, N, P), (B, N*P) -> (B, K)
    ascending) for every method; `tokens` (B, N*P, D) for the methods that read them. keep >= N*P, or `full`,
    returns every position."""
    method = get(name)
    if name == "adafv":
        from .select import select_tokens

        return select_tokens(saliency, relevance, keep, mode=mode, legacy_offset=legacy_offset, check=check)
    if method.merges:
        positions(name, saliency, relevance, keep)  # the one-line refusal
    from .ops import all_positions
    from .select import check_scores

    if check:
        B, N, P = check_scores(saliency, relevance if method.needs_relevance else None, keep)
    else:
        B, N, P = saliency.shape
    if keep >= N * P or name == "full":
        return all_positions(B, N * P, saliency.device)
    if method.reads == "tokens" and (tokens is None or tuple(tokens.shape[:2]) != (B, N * P)):
        raise ScoreError(f"{name} selects from the visual tokens themselves: pass tokens of shape (B, N*P, D)")
    return positions(name, saliency, relevance, keep, tokens=tokens, seed=seed)
