"""adafv.checkpoints: model checkpoints shipped inside the package, found through importlib.resources. Holds
`toyworld-llava-next` and `toyworld-v2-llava-next`, small LLaVA-NeXTs trained on toy-world v1 and v2 scenes, and
`toyworld-v2-qwen2.5-vl`, a small Qwen2.5-VL trained on v2 scenes (see each one's model card, README.md in its
folder), which the registry names after their folders."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def path(name: str) -> Path:
    """The folder of a shipped checkpoint (it may be missing from a source tree that did not fetch it)."""
    return Path(str(resources.files(__name__) / name))
