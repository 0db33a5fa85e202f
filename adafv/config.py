"""The one frozen configuration of a token selection; validated on creation, written next to every artifact."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .errors import ConfigError
from .methods import COMPILABLE, NAMES

MODES = ("exact", "paper")
LAYOUTS = ("rows", "compact")
METHODS = NAMES  # the registry's (adafv.methods): the one list of method names
GRAPH_METHODS = COMPILABLE  # those a vision graph can compile (fixed keep)
TOPK_LIMIT = 3840  # TensorRT's TopK accepts K < 3840; the graph is built with K = keep


@dataclasses.dataclass(frozen=True)
class AdaFVConfig:
    """How many visual tokens to keep and how to choose them.

    keep: the token budget (exact mode emits exactly `keep` positions; paper mode at most `keep`).
    method: `adafv` (the paper), or a baseline: `fastervlm` (saliency only), `text` (relevance only), `dart`
        (pivots + least-duplicated tokens), `divprune` (max-min diversity), `visionzip` (dominant by [CLS] attention
        + contextual tokens merged by key similarity), `random` (seeded), `full` (no reduction).
    mode: `exact` (default: exactly `keep` distinct positions) or `paper` (docs/method.md §3-7, duplicates kept).
    legacy_offset: reproduce the released code's crop-offset defect (paper mode only; for comparing with tables).
    temperature: the factor applied to cosine similarities before the softmax of the relevance cue (100 in the paper).
    seed: the seed of the `random` baseline.
    layout: how the kept tokens reach the LLM (anyres models): `rows` (default: reading order, with the model's
        `image_newline` embedding after each high-resolution grid row that keeps a token, as the stock sequence ends
        every row) or `compact` (reading order only: the paper's setting). `rows` won on the toy world (README).
    """

    keep: int
    method: str = "adafv"
    mode: str = "exact"
    legacy_offset: bool = False
    temperature: float = 100.0
    seed: int = 0
    layout: str = "rows"

    def __post_init__(self) -> None:
        if isinstance(self.keep, bool) or not isinstance(self.keep, int):
            raise ConfigError(f"keep must be an integer, got {self.keep!r}")
        if self.keep <= 0:
            raise ConfigError(f"keep must be positive, got {self.keep}")
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.legacy_offset and self.mode != "paper":
            raise ConfigError("legacy_offset reproduces the released code's defect and needs mode='paper'")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"unknown layout {self.layout!r}; choose one of {', '.join(LAYOUTS)}")
        if not (self.temperature > 0 and self.temperature < float("inf")):
            raise ConfigError(f"temperature must be a positive finite number, got {self.temperature!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdaFVConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown AdaFVConfig fields: {', '.join(sorted(unknown))}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
