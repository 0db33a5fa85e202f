"""adafv.checkpoints: model checkpoints shipped inside the package, found through importlib.resources. Holds
`toyworld-llava-next`, the small LLaVA-NeXT trained on toy-world scenes (see its model card, README.md in its folder),
which the registry names `toyworld-llava-next`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def path(name: str) -> Path:
    """The folder of a shipped checkpoint (it may be missing from a source tree that did not fetch it)."""
    return Path(str(resources.files(__name__) / name))
