"""Calibration data as the vision graph sees it: images and questions turned into feed dicts through the runtime's
own preprocessing (uint8 crops, grid) and the bundle's chat template and embedding table, exactly as at inference.

Sources: a folder of images (each asked "What is in the picture?"), a JSONL of `{"image", "question"}` (paths
relative to the file; an optional `split`), or the set shipped in `calib/data/` (24 questions: scikit-image's public
photos and held-out toy-world scenes, split into calibration and held-out halves).

`load_data()` is also a Polygraphy data loader (`polygraphy run ... --data-loader-script adafv/calib/data.py`):
it reads the bundle from $ADAFV_CALIB_BUNDLE and the data from $ADAFV_CALIB_DATA (default: the shipped set).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_QUESTION = "What is in the picture?"


@dataclass(frozen=True)
class Item:
    image: str
    question: str
    split: str = "calibration"
    answer: str | None = None


def shipped() -> Path:
    """The questions file shipped in the package."""
    return Path(str(resources.files("adafv.calib") / "data" / "questions.jsonl"))


def items(source: str | Path | None = None, split: str | None = None) -> list[Item]:
    """The items of a folder of images, a JSONL file, or (None) the shipped set; `split` keeps one half."""
    from adafv.errors import ConfigError

    path = Path(source) if source is not None else shipped()
    if path.is_dir():
        found = [Item(str(p), DEFAULT_QUESTION) for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    elif path.is_file():
        found = []
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                image = Path(row["image"])
                found.append(Item(str(image if image.is_absolute() else path.parent / image),
                                  row.get("question", DEFAULT_QUESTION), row.get("split", "calibration"),
                                  row.get("answer")))  # fmt: skip
            except (ValueError, KeyError, TypeError) as e:
                raise ConfigError(f"{path}:{n}: not a calibration line ({e})") from e
    else:
        raise ConfigError(f"calibration data not found: {path} (a folder of images or a JSONL file)")
    if split is not None:
        found = [it for it in found if it.split == split]
    if not found:
        raise ConfigError(f"no calibration images in {path}" + (f" (split {split})" if split else ""))
    return found


def feeds(pipe, chosen: list[Item]) -> Iterator[dict[str, np.ndarray]]:
    """Feed dicts of the bundle's vision graph, one per item (the runtime's preprocessing and embeddings)."""
    from adafv.runtime import load_image
    from adafv.runtime.preprocess import preprocess

    spec = pipe.manifest["preprocess"]
    inputs = pipe.manifest["vision"]["inputs"]
    lo, hi = pipe.manifest["vision"]["crops"]
    for item in chosen:
        pixels, grid = preprocess(load_image(item.image), spec)
        if not lo <= pixels.shape[0] <= hi:
            continue  # a grid the engine does not take (--max-crops)
        _, post = pipe.prompt_ids(item.question)
        feed = {"pixel_values": pixels, "text_embeds": np.asarray(pipe.embed(post), dtype=np.float32)}
        if "image_grid" in inputs:
            feed["image_grid"] = np.asarray(grid, dtype=np.int64)
        yield feed


def load_data() -> Iterator[dict[str, np.ndarray]]:
    """Polygraphy's data-loader-script entry point (see the module docstring)."""
    from adafv.runtime import Pipeline

    pipe = Pipeline.load(os.environ["ADAFV_CALIB_BUNDLE"], warmup=False)
    yield from feeds(pipe, items(os.environ.get("ADAFV_CALIB_DATA"), "calibration"))
