"""adafv.assets: sample images shipped inside the package (found through importlib.resources, never from a
checkout): `rocket.jpg`, a NASA photo (public domain, as in scikit-image's sample data), and `toyworld.png`, the
held-out toy-world scene `make demo` asks about."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

NAMES = ("rocket.jpg", "toyworld.png")


def path(name: str) -> Path:
    """The file path of a shipped sample image (a real file inside the installed package)."""
    if name not in NAMES:
        raise FileNotFoundError(f"no sample image {name!r}; shipped: {', '.join(NAMES)}")
    return Path(str(resources.files(__name__) / name))
