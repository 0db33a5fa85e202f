"""adafv.runtime.preprocess equals the HF image processors bit for bit; adafv.export.preprocess_spec describes them.

Every case runs the HF processor on the image as opened (grayscale and RGBA included: HF converts them itself) and
the runtime on the image from `adafv.runtime.load_image`, through a spec that went through JSON like a bundle's.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from adafv.export.preprocess_spec import image_processor_spec
from adafv.runtime import load_image
from adafv.runtime.preprocess import crop_grid, crop_side, normalize, preprocess, select_best_resolution, value_table
from tests.conftest import PHOTOS, photo_path

SQUARE_336 = dict(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
# (width, height) of synthetic images: square, portrait, 1:3 panorama, 3:1 tall, odd sizes, tiny, one pixel
SYNTHETIC_SIZES = {
    "square": (400, 400),
    "portrait": (360, 640),
    "panorama_1x3": (1200, 400),
    "tall_3x1": (300, 900),
    "odd": (517, 333),
    "strip": (1000, 7),
    "tiny_10x10": (10, 10),
    "one_pixel": (1, 1),
}


@pytest.fixture(scope="module")
def processors() -> dict:
    from transformers import CLIPImageProcessorPil, LlavaNextImageProcessorPil

    from adafv import tiny

    return {
        "tiny-llava-next": tiny.build("tiny-llava-next")[1],
        "tiny-llava": tiny.build("tiny-llava")[1],
        "llava-next-336": LlavaNextImageProcessorPil(image_grid_pinpoints=NEXT_PINPOINTS, **SQUARE_336),
        "clip-336": CLIPImageProcessorPil(**SQUARE_336),
    }


def _synthetic(width: int, height: int, seed: int) -> np.ndarray:
    """Smooth gradients plus noise: exercises every resampling tap and the full byte range."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    smooth = np.stack([x * 255.0 / max(width - 1, 1), y * 255.0 / max(height - 1, 1), (x + y) % 256], axis=-1)
    return np.clip(smooth + rng.normal(0, 40, smooth.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict:
    """name -> (image as opened, for HF; RGB image from load_image, for the runtime)."""
    folder = tmp_path_factory.mktemp("images")
    originals = {name: Image.open(photo_path(name)) for name in PHOTOS}
    for seed, (name, (width, height)) in enumerate(SYNTHETIC_SIZES.items()):
        originals[name] = Image.fromarray(_synthetic(width, height, seed))
    pixels = _synthetic(300, 200, seed=99)
    originals["grayscale"] = Image.fromarray(pixels[..., 0], "L")
    alpha = np.linspace(0, 255, 300, dtype=np.uint8)[None, :].repeat(200, axis=0)
    originals["rgba"] = Image.fromarray(np.dstack([pixels, alpha]), "RGBA")
    cases = {}
    for name, image in originals.items():
        path = folder / f"{name}.png"
        image.save(path)
        cases[name] = (Image.open(path), load_image(path))
    return cases


def _spec(processor) -> dict:
    return json.loads(json.dumps(image_processor_spec(processor)))


@pytest.mark.parametrize("processor_name", ["tiny-llava-next", "tiny-llava", "llava-next-336", "clip-336"])
def test_equals_hf_processor(processors, images, processor_name):
    from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape

    processor = processors[processor_name]
    image_processor = getattr(processor, "image_processor", processor)
    spec = _spec(processor)
    for name, (original, rgb) in images.items():
        expected = image_processor(original, return_tensors="np")["pixel_values"]
        pixels, grid = preprocess(rgb, spec)
        assert pixels.dtype == np.uint8  # the host sends bytes; the graph normalises (the same table)
        pixel_values = normalize(pixels, spec)
        assert pixel_values.dtype == np.float32
        if spec["kind"] == "anyres":
            expected = expected[0]
            side = crop_side(spec)
            hf_grid = get_anyres_image_grid_shape((rgb.height, rgb.width), spec["image_grid_pinpoints"], side)
            assert grid == tuple(hf_grid), name
            assert len(pixel_values) == 1 + grid[0] * grid[1], name
        else:
            assert grid == (1, 1)
        assert pixel_values.shape == expected.shape, name
        assert np.array_equal(pixel_values, expected), (name, float(np.abs(pixel_values - expected).max()))
        assert crop_grid((rgb.height, rgb.width), spec) == grid


def _unusual_options() -> dict:
    """Options our models do not use but the spec accepts: each takes a path the default configs skip."""
    from transformers import CLIPImageProcessorPil, LlavaNextImageProcessorPil

    small_pinpoints = [[48, 96], [96, 48], [96, 96], [144, 48]]
    return {
        # crops resized up to 64 then centre-cropped back to 48
        "anyres-resized-crops": LlavaNextImageProcessorPil(
            size={"shortest_edge": 64}, crop_size={"height": 48, "width": 48}, image_grid_pinpoints=small_pinpoints
        ),
        "anyres-height-width-no-rescale": LlavaNextImageProcessorPil(
            size={"height": 48, "width": 48},
            crop_size={"height": 48, "width": 48},  # no centre crop, but it still sets the crop side
            do_center_crop=False,
            do_rescale=False,
            image_grid_pinpoints=small_pinpoints,
            resample=Image.Resampling.BILINEAR,
        ),
        # no per-crop resize; the base view still resizes, with PIL's bilinear when resample is None
        "anyres-no-resize-default-resample": LlavaNextImageProcessorPil(
            size={"shortest_edge": 48},
            crop_size={"height": 48, "width": 48},
            do_resize=False,
            resample=None,
            image_grid_pinpoints=small_pinpoints,
        ),
        # the crop is larger than the resized image: zero padding
        "clip-crop-pads": CLIPImageProcessorPil(size={"shortest_edge": 40}, crop_size={"height": 48, "width": 64}),
        "clip-height-width-no-normalize": CLIPImageProcessorPil(
            size={"height": 50, "width": 70}, do_center_crop=False, do_normalize=False, resample=1, image_mean=0.5
        ),
        "clip-scalar-mean-no-resize": CLIPImageProcessorPil(
            do_resize=False, crop_size={"height": 32, "width": 32}, image_mean=0.5, image_std=0.25
        ),
    }


def test_equals_hf_processor_with_unusual_options(images):
    for processor_name, image_processor in _unusual_options().items():
        spec = _spec(image_processor)
        for name in ("astronaut.png", "panorama_1x3", "tall_3x1", "tiny_10x10", "one_pixel", "rgba"):
            original, rgb = images[name]
            expected = image_processor(original, return_tensors="np")["pixel_values"]
            pixel_values = normalize(preprocess(rgb, spec)[0], spec)
            expected = expected[0] if spec["kind"] == "anyres" else expected
            assert pixel_values.shape == expected.shape, (processor_name, name)
            assert np.array_equal(pixel_values, expected), (processor_name, name)


def test_grid_matches_transformers_over_many_sizes(processors):
    from transformers.image_processing_utils import select_best_resolution as hf_select_best_resolution

    rng = np.random.default_rng(0)
    sizes = [(int(h), int(w)) for h, w in rng.integers(1, 3000, size=(500, 2))]
    sizes += [(1, 1), (1, 3000), (3000, 1), (336, 672), (672, 336), (671, 337)]
    for processor_name in ("tiny-llava-next", "llava-next-336"):
        spec = _spec(processors[processor_name])
        pinpoints, side = spec["image_grid_pinpoints"], crop_side(spec)
        for size in sizes:
            best = hf_select_best_resolution(size, pinpoints)
            assert select_best_resolution(size, pinpoints) == best
            assert crop_grid(size, spec) == (best[0] // side, best[1] // side)


def test_spec_of_tiny_processors(processors):
    spec = image_processor_spec(processors["tiny-llava-next"])
    assert spec["kind"] == "anyres" and spec["size"] == {"shortest_edge": 56}
    assert spec["crop_size"] == {"height": 56, "width": 56} and crop_side(spec) == 56
    assert spec["resample"] == Image.Resampling.BICUBIC
    assert image_processor_spec(processors["tiny-llava"].image_processor)["kind"] == "clip"
    assert json.loads(json.dumps(spec)) == spec


def test_spec_rejects_what_the_runtime_cannot_reproduce():
    from transformers import CLIPImageProcessorPil, LlavaNextImageProcessorPil, ViTImageProcessorPil

    with pytest.raises(ValueError, match="unsupported image processor ViTImageProcessorPil"):
        image_processor_spec(ViTImageProcessorPil())
    torchvision_named = type("LlavaNextImageProcessor", (), {})()
    with pytest.raises(ValueError, match="torchvision backend.*backend='pil'"):
        image_processor_spec(torchvision_named)
    with pytest.raises(ValueError, match="size=.*longest_edge"):
        image_processor_spec(CLIPImageProcessorPil(size={"shortest_edge": 224, "longest_edge": 448}))
    with pytest.raises(ValueError, match="not multiples of the crop side 336"):
        image_processor_spec(
            LlavaNextImageProcessorPil(
                size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, image_grid_pinpoints=[[336, 500]]
            )
        )
    with pytest.raises(ValueError, match="crops of one image differ in size"):
        image_processor_spec(LlavaNextImageProcessorPil(do_center_crop=False, **SQUARE_336))
    with pytest.raises(ValueError, match="data_format='channels_last'"):
        image_processor_spec(CLIPImageProcessorPil(data_format="channels_last"))
    with pytest.raises(ValueError, match="do_pad with pad_size"):
        image_processor_spec(CLIPImageProcessorPil(do_pad=True, pad_size={"height": 300, "width": 300}))
    with pytest.raises(ValueError, match="resample='bicubic' is not a PIL resampling filter"):
        image_processor_spec(CLIPImageProcessorPil(resample="bicubic"))


def test_value_table_is_the_processors_arithmetic(processors):
    """Every byte value in every channel through the HF processor: an image of exactly the view size (so every
    resize and crop is the identity) holding each value many times; the base view must be the table applied."""
    for name in ("tiny-llava-next", "llava-next-336", "clip-336"):
        image_processor = getattr(processors[name], "image_processor", processors[name])
        spec = _spec(processors[name])
        side = crop_side(spec) if spec["kind"] == "anyres" else spec["crop_size"]["height"]
        values = (np.arange(side * side).reshape(side, side) * 7 % 256).astype(np.uint8)  # (S, S) all 256 values
        rgb = np.stack([values, 255 - values, values[::-1]], axis=-1)  # (S, S, 3)
        out = image_processor(Image.fromarray(rgb), return_tensors="np")["pixel_values"]
        view = out[0, 0] if spec["kind"] == "anyres" else out[0]  # (3, S, S)
        table = value_table(spec)  # (3, 256)
        assert np.array_equal(view, np.stack([table[c][rgb[..., c]] for c in range(3)])), name


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown image preprocessing kind 'tiles'"):
        preprocess(Image.new("RGB", (8, 8)), {"kind": "tiles"})


def test_runs_without_torch_or_transformers(processors):
    spec = json.dumps(image_processor_spec(processors["llava-next-336"]))
    code = (
        "import json, sys\n"
        "from PIL import Image\n"
        "from adafv.runtime.preprocess import preprocess\n"
        f"pixels, grid = preprocess(Image.new('RGB', (1280, 720), (10, 200, 30)), json.loads({spec!r}))\n"
        "assert pixels.shape == (5, 3, 336, 336) and pixels.dtype.name == 'uint8' and grid == (2, 2)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
