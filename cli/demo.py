"""`adafv demo` / `make demo`: answer a question about an image with the offline default model.

With the shipped toy-world model (`checkpoints/toyworld-llava-next/`): a fixed seeded toy-world scene and question,
the scene written to a temp png and answered from that file with AdaFV, next to the expected answer. Without it:
the random-weight `tiny-llava-next` on a real photo (its answer is noise).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

DEFAULT_MODEL = "tiny-llava-next"
TOYWORLD = "toyworld-llava-next"
DEMO_SAMPLE = 30  # held-out sample HELDOUT_SEED + 30: "What color is the small cross?" (a small object; answered right)
DEMO_KEEP = 64  # visual tokens kept by AdaFV: 20-33% of the 192-320 a toy-world scene has


def sample_photo(name: str = "rocket.jpg") -> Path:
    """A real photo shipped in the package (adafv.assets; public domain)."""
    from adafv.assets import path

    return path(name)


def default_model() -> str:
    from adafv.errors import ModelError
    from adafv.models import resolve

    try:
        resolve(TOYWORLD)
    except ModelError:  # a source tree without the checkpoint: the random twin still shows the path
        return DEFAULT_MODEL
    return TOYWORLD


def is_toyworld(model: str) -> bool:
    from adafv.models import resolve

    if model == TOYWORLD:
        return True
    return Path(model).is_dir() and Path(model).resolve() == Path(resolve(TOYWORLD).source).resolve()


def toyworld_sample(index: int = DEMO_SAMPLE) -> tuple[Path, str, str, str]:
    """Write held-out toy-world sample `index` to a temp png: (path, question, expected answer, object size)."""
    from adafv.eval.toyworld.scenes import heldout

    scene, question = next(heldout(1, start=index))
    path = Path(tempfile.gettempdir()) / f"adafv-toyworld-{scene.seed}.png"
    scene.image.save(path)
    return path, question.text, question.answer, question.size


def run_demo(model: str | None = None, keep: int | None = None) -> int:
    from adafv import AdaFVConfig
    from adafv.pipeline import Reference
    from adafv.runtime import load_image

    model = model or default_model()
    reference = Reference.load(model)
    if is_toyworld(model):
        image_path, prompt, expected, size = toyworld_sample()
        keep = keep or DEMO_KEEP
        max_new_tokens = 3
    else:
        image_path, prompt, expected, size = sample_photo(), "What is in the picture?", None, None
        keep = keep or 64
        max_new_tokens = 16
    image = load_image(image_path)
    result = reference.run(image, prompt, AdaFVConfig(keep=keep), max_new_tokens=max_new_tokens)
    print(f"model:    {model}" + ("  (random weights: the answer is noise)" if model.startswith("tiny-") else ""))
    grid = "x".join(map(str, result["grid"]))
    print(f"image:    {image_path}  ({image.width}x{image.height} px, {result['num_crops']} crops, grid {grid})")
    print(f"prompt:   {prompt}" + (f"  (about a {size} object)" if size else ""))
    print(f"kept:     {result['num_kept']} of {result['num_visual_tokens']} visual tokens (AdaFV, exact)")
    if expected is None:
        print(f"answer:   {result['text']!r}")
    else:
        verdict = "correct" if result["text"] == expected else "WRONG"
        print(f"expected: {expected}")
        print(f"answer:   {result['text']}  ({verdict})")
    print(f"time:     {result['timings_ms']['total']:.0f} ms", file=sys.stderr)
    return 0
