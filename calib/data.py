"""Calibration data as the vision graph sees it: images and questions turned into feed dicts through the runtime's
own preprocessing (uint8 crops, grid) and the bundle's chat template and embedding table, exactly as at inference.

Sources: a folder of images (each asked "What is in the picture?"; in name order the images alternate between the
calibration and the held-out half, so one folder serves a build and its report), a JSONL of `{"image", "question"}`
(paths relative to the file; an optional `split`, "calibration" by default, or "heldout"), or the set shipped in
`calib/data/` (24 questions: scikit-image's public photos and held-out toy-world scenes, split into calibration and
held-out halves).

An item whose image the engine cannot take (a crop count outside its range, see --max-crops) or cannot decode is
not dropped silently: `prepared` returns it with its reason, the report lists and counts it, and a report left with
fewer than `MIN_ITEMS` items fails.

`load_data()` is also a Polygraphy data loader (`polygraphy run ... --data-loader-script adafv/calib/data.py`):
it reads the bundle from $ADAFV_CALIB_BUNDLE and the data from $ADAFV_CALIB_DATA (default: the shipped set).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_QUESTION = "What is in the picture?"
SPLITS = ("calibration", "heldout")
MIN_ITEMS = 3  # a report on fewer held-out items says too little: it fails (the build with it)


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
    from adafv.datafile import jsonl, local_path
    from adafv.errors import ConfigError, DataError

    path = Path(source) if source is not None else shipped()
    if path.is_dir():
        images = [p for p in sorted(path.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        found = [Item(str(p), DEFAULT_QUESTION, SPLITS[i % 2]) for i, p in enumerate(images)]
    elif path.is_file():
        found = []
        for n, row in jsonl(path, "calibration data", "{image, question, split}"):
            image, question = row.get("image"), row.get("question", DEFAULT_QUESTION)
            split = row.get("split", "calibration")
            if not isinstance(image, str) or not image.strip():
                raise DataError(f"{path}:{n}: not a calibration line ('image' must be a non-empty string)")
            if not isinstance(question, str) or not question.strip() or split not in SPLITS:
                raise DataError(f"{path}:{n}: not a calibration line (question must be text and split one of "
                                f"{', '.join(SPLITS)})")  # fmt: skip
            found.append(Item(str(local_path(path, image)), question, split, row.get("answer")))
    else:
        raise ConfigError(f"calibration data not found: {path} (a folder of images or a JSONL file)")
    if split is not None:
        found = [it for it in found if it.split == split]
    if not found:
        raise ConfigError(f"no calibration images in {path}" + (f" (split {split})" if split else ""))
    return found


def prepared(pipe, chosen: list[Item]) -> tuple[list[tuple[Item, dict[str, np.ndarray]]], list[tuple[Item, str]]]:
    """(item, feed dict) for every item the bundle's vision graph takes (the runtime's preprocessing and
    embeddings), and (item, reason) for every other one."""
    from adafv.runtime import load_image
    from adafv.runtime.errors import RuntimeFailure
    from adafv.runtime.preprocess import crop_to_aspect, preprocess

    spec = pipe.manifest["preprocess"]
    lo, hi = pipe.manifest["vision"]["crops"]
    used, skipped = [], []
    for item in chosen:
        try:
            # a fixed-resolution (Qwen) bundle: each image centre-cropped to its aspect, as its camera would see
            pixels, grid = preprocess(crop_to_aspect(load_image(item.image), spec), spec)
            _, post = pipe.prompt_ids(item.question)
        except RuntimeFailure as e:
            skipped.append((item, str(e)))
            continue
        if not lo <= pixels.shape[0] <= hi:
            skipped.append((item, f"{pixels.shape[0]} crops; the vision graph takes {lo}..{hi} (--max-crops)"))
            continue
        used.append((item, pipe.vision_feeds(pixels, pipe.embed(post), grid, dtype=np.float32)))
    return used, skipped


def feeds(pipe, chosen: list[Item]) -> Iterator[dict[str, np.ndarray]]:
    """Feed dicts of the bundle's vision graph, one per item it takes (see `prepared` for the others)."""
    for _, feed in prepared(pipe, chosen)[0]:
        yield feed


def load_data() -> Iterator[dict[str, np.ndarray]]:
    """Polygraphy's data-loader-script entry point (see the module docstring)."""
    from adafv.runtime import Pipeline

    pipe = Pipeline.load(os.environ["ADAFV_CALIB_BUNDLE"], warmup=False)
    yield from feeds(pipe, items(os.environ.get("ADAFV_CALIB_DATA"), "calibration"))
