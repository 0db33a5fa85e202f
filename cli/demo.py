"""`adafv demo` / `make demo`: answer a question about a real photo with the offline default model."""

from __future__ import annotations

import sys
from pathlib import Path

from adafv.models import REGISTRY

DEFAULT_MODEL = "tiny-llava-next"


def sample_photo(name: str = "astronaut.png") -> Path:
    """A real photo shipped (public domain) inside scikit-image's wheel."""
    import skimage

    path = Path(skimage.__file__).parent / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"scikit-image's sample photo {name} is missing at {path}")
    return path


def default_model() -> str:
    toy = REGISTRY["toyworld-llava-next"]
    return toy.name if Path(toy.source, "config.json").is_file() else DEFAULT_MODEL


def run_demo(model: str | None = None, keep: int | None = None) -> int:
    from adafv import AdaFVConfig
    from adafv.pipeline import Reference
    from adafv.runtime import load_image

    model = model or default_model()
    photo = sample_photo()
    prompt = "What is in the picture?"
    reference = Reference.load(model)
    keep = keep or 64
    result = reference.run(load_image(photo), prompt, AdaFVConfig(keep=keep), max_new_tokens=16)
    print(f"model:  {model}" + ("  (random weights: the answer is noise)" if model.startswith("tiny-") else ""))
    print(f"image:  {photo.name}")
    print(f"prompt: {prompt}")
    print(f"kept:   {result['num_kept']} of {result['num_visual_tokens']} visual tokens (AdaFV, exact)")
    print(f"answer: {result['text']!r}")
    print(f"time:   {result['timings_ms']['total']:.0f} ms", file=sys.stderr)
    return 0
