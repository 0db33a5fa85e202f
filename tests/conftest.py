"""Shared fixtures: tiny models (built once per session), real photos shipped with scikit-image."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"]


def photo_path(name: str) -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data" / name


@pytest.fixture(scope="session")
def photos():
    from adafv.runtime import load_image

    return {name: load_image(photo_path(name)) for name in PHOTOS}


@pytest.fixture(scope="session")
def tiny_next():
    from adafv.pipeline import Reference

    return Reference.load("tiny-llava-next")


@pytest.fixture(scope="session")
def tiny_llava():
    from adafv.pipeline import Reference

    return Reference.load("tiny-llava")
