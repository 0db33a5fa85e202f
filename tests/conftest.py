"""Shared fixtures: tiny models and bundles (each built once per session), real photos shipped with scikit-image."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# the same examples on every run and machine, and no example database written into the checkout
settings.register_profile("adafv", derandomize=True, database=None, deadline=None)
settings.load_profile("adafv")

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


@pytest.fixture(scope="session")
def make_bundle(tmp_path_factory):
    """`make_bundle(model, keep, ...)` -> BuildResult, built once per session and shared by every test that asks for
    the same settings (tests that damage a bundle copy it first). The target is explicit, so the GPU environment
    builds the same bundles as the CPU one."""
    from adafv import AdaFVConfig
    from adafv.export.bundle import EngineConfig, build

    root = tmp_path_factory.mktemp("bundles")
    built = {}

    def make(model="tiny-llava-next", keep=64, mode="exact", precision="fp32", llm="int4", target="cpu",
             resolution=None, method="adafv"):  # fmt: skip
        key = (model, keep, mode, precision, llm, target, *(resolution or ()), method)
        if key not in built:
            config = EngineConfig(model, AdaFVConfig(keep=keep, mode=mode, method=method), precision=precision,
                                  llm_precision=llm, target=target, resolution=resolution)  # fmt: skip
            built[key] = build(config, out=root / "-".join(map(str, key)), progress=False)
        return built[key]

    return make
