"""Toy world: small VLMs trained here on procedurally generated scenes, to measure token selection offline.

* `scenes`: v1's seeded scene and question generator (pure Python, numpy and PIL), kept for the v1 model;
* `scenes_v2`: v2's scenes: a central salient distractor, small queried objects in clutter, five balanced kinds;
* `model`: the models from configs (LLaVA-NeXT and Qwen2.5-VL), word-level tokenizers and their HF processors;
* `qwen`: the Qwen2.5-VL toy's geometry (objects on the merged grid) and its tower stage (no [CLS]);
* `train`: the training script (tower pretraining, stage 0, 1, 2 the way LLaVA is trained; v2 adds grounding);
* `evaluate`: the measurement, accuracy vs keep per selection method, per kind, with intervals and paired tests.

The shipped checkpoints live in `checkpoints/toyworld-llava-next/` (v1), `checkpoints/toyworld-v2-llava-next/` and
`checkpoints/toyworld-v2-qwen2.5-vl/` (v2); each one's `train.json` names its world and family.
"""

from __future__ import annotations

import json
from pathlib import Path

WORLDS = ("v1", "v2")


def world(name: str = "v1"):
    """The scene module of a world: `scenes` (v1) or `scenes_v2` (v2)."""
    if name == "v1":
        from . import scenes

        return scenes
    if name == "v2":
        from . import scenes_v2

        return scenes_v2
    raise ValueError(f"unknown toy world {name!r}: one of {', '.join(WORLDS)}")


def world_of(checkpoint: str | Path):
    """The world a trained checkpoint was trained on (its train.json's `settings.world`; v1 when it has none)."""
    path = Path(checkpoint) / "train.json"
    settings = json.loads(path.read_text()).get("settings", {}) if path.is_file() else {}
    return world(settings.get("world", "v1"))
