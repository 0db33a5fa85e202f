"""Image preprocessing for the torch-free runtime: numpy + PIL, bit-equal to transformers' PIL image processors.

`preprocess(image, spec)` turns an RGB PIL image into the `pixel_values` the model's HF image processor produces:
`LlavaNextImageProcessorPil` (`kind="anyres"`), `CLIPImageProcessorPil` (`kind="clip"`) or, at a bundle's fixed
resolution, `Qwen2VLImageProcessorPil` (`kind="qwen2vl"`: one resize, no crop; `patchify` lays the values out as
its `pixel_values`; `check_aspect` refuses images it would distort). `spec` is the JSON-able
dict `adafv.export.preprocess_spec.image_processor_spec` writes into the bundle:

    kind                 "anyres" | "clip"
    size                 {"shortest_edge": s} and/or {"height": h, "width": w}
    crop_size            {"height": h, "width": w}
    image_grid_pinpoints [[h, w], ...]          (anyres only)
    resample             PIL resample id
    do_resize, do_center_crop, do_rescale, do_normalize
    rescale_factor, image_mean, image_std

The steps are transformers' own, in its order and on the same dtypes, which is what makes them bit-exact:
every resize is PIL's on the uint8 image, padding and cropping fill with zero bytes, and rescale + normalize
(`float32(float64(v) * rescale_factor)`, then `(x - mean) / std` in float32) are a per-channel table over the 256
byte values (`value_table`), so each output element is computed by exactly the same IEEE operations as in
transformers.

The host does no float work: `preprocess` returns the **uint8** crops `(N, 3, S, S)`, a quarter of the bytes of
float32 pixel values, and the vision graph applies `value_table` itself (a Gather over 3 x 256 entries, see
`adafv.export.graph.PixelTable`). `normalize(pixels, spec)` is the same table in numpy, for tests and tools.
The two PIL resizes of an anyres image (into the grid resolution, and the base view) run on two threads: Pillow
releases the GIL while it resamples, and each resize is the very call transformers makes.

Anyres: the grid resolution is `select_best_resolution` over the pinpoints; the image is resized into it keeping
its aspect ratio, centred on zeros, and cut into crops row-major; the base view (the whole image resized to the
square `size`) comes first. Each crop is then resized to `size`, centre-cropped to `crop_size`, rescaled and
normalised. The processor's `do_pad` pads the number of crops across a batch and changes nothing for one image.
"""

from __future__ import annotations

import dataclasses
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from .errors import ImageError
from .images import to_rgb


def select_best_resolution(image_size_hw: tuple[int, int], pinpoints: list[list[int]]) -> tuple[int, int]:
    """The pinpoint `(height, width)` keeping the most of the image's pixels, then wasting the fewest (first wins)."""
    height, width = image_size_hw
    best_fit = None
    max_effective, min_wasted = 0, float("inf")
    for pin_h, pin_w in pinpoints:
        scale = min(pin_w / width, pin_h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        wasted = pin_w * pin_h - effective
        if effective > max_effective or (effective == max_effective and wasted < min_wasted):
            max_effective, min_wasted = effective, wasted
            best_fit = (pin_h, pin_w)
    return best_fit


def _fit_size(image_size_hw: tuple[int, int], target_hw: tuple[int, int]) -> tuple[int, int]:
    """Size `(height, width)` of the image resized into `target_hw` keeping its aspect ratio (transformers' rule)."""
    height, width = image_size_hw
    target_h, target_w = target_hw
    scale_w, scale_h = target_w / width, target_h / height
    if scale_w < scale_h:
        return min(math.ceil(height * scale_w), target_h), target_w
    return target_h, min(math.ceil(width * scale_h), target_w)


def crop_side(spec: dict) -> int:
    """Side of the square anyres crops: `crop_size` height, else `size` height, else `size` shortest edge."""
    crop, size = spec.get("crop_size") or {}, spec["size"]
    return crop.get("height") or size.get("height") or size["shortest_edge"]


def crop_grid(image_size_hw: tuple[int, int], spec: dict) -> tuple[int, int]:
    """`(rows, cols)` of high-resolution crops for an image of `image_size_hw`; `(1, 1)` without anyres."""
    if spec["kind"] != "anyres":
        return 1, 1
    grid_h, grid_w = select_best_resolution(image_size_hw, spec["image_grid_pinpoints"])
    side = crop_side(spec)
    return _ceil_div(grid_h, side), _ceil_div(grid_w, side)


@dataclasses.dataclass(frozen=True)
class PreparedImage:
    """An image already turned into what the vision graph takes: uint8 crops `(N, 3, S, S)` and the crop grid. A
    server decodes and prepares each admitted image once and then holds only this (a 5-crop LLaVA-NeXT image is
    1.7 MB, where the decoded photo may be hundreds), and `Pipeline.run` takes it in place of a PIL image."""

    pixels: np.ndarray
    grid: tuple[int, int]
    size: tuple[int, int]  # (width, height) of the image it came from
    preprocess_ms: float = 0.0


def prepare(image, spec: dict) -> PreparedImage:
    """`preprocess`, kept with its timing and the source size."""
    import time

    start = time.perf_counter()
    pixels, grid = preprocess(image, spec)
    return PreparedImage(pixels, tuple(grid), tuple(image.size), round((time.perf_counter() - start) * 1000, 3))


def preprocess(image, spec: dict) -> tuple[np.ndarray, tuple[int, int]]:
    """RGB PIL image -> (`pixels` uint8 `(N, 3, H, W)`, crop grid `(rows, cols)`); `normalize` gives the float32
    `pixel_values` of the HF processor, bit for bit.

    Anyres: N = 1 + rows * cols, the base view first, then the crops row-major. CLIP: N = 1, grid `(1, 1)`.
    """
    image = to_rgb(image)
    image.load()  # decoded once, here: the two resize threads below then only read it
    if spec["kind"] == "qwen2vl":
        return _fixed_resolution(image, spec), (1, 1)
    if spec["kind"] == "anyres":
        crops, grid = _anyres_crops(image, spec)
    elif spec["kind"] == "clip":
        crops, grid = [image], (1, 1)
    else:
        raise ValueError(f"unknown image preprocessing kind {spec['kind']!r} (expected anyres, clip or qwen2vl)")
    crops = [_finish_crop(crop, spec) for crop in crops]  # uint8 (H, W, 3) each
    pixels = np.empty((len(crops), 3, *crops[0].shape[:2]), dtype=np.uint8)  # (N, 3, H, W)
    for n, crop in enumerate(crops):
        pixels[n] = crop.transpose(2, 0, 1)
    return pixels, grid


ASPECT_TOLERANCE_CELLS = 1  # an image may differ from a fixed-resolution bundle's aspect by one 28-px cell at most


def check_aspect(size_wh: tuple[int, int], spec: dict) -> None:
    """A fixed-resolution (Qwen) bundle takes images of its aspect ratio, give or take one merge cell; anything
    else would be distorted by the resize: one ImageError line instead."""
    width, height = size_wh
    target_h, target_w = spec["resolution"]["height"], spec["resolution"]["width"]
    cell = spec["patch_size"] * spec["merge_size"]
    slack = math.log1p(ASPECT_TOLERANCE_CELLS * cell / min(target_h, target_w))
    if abs(math.log((width / height) / (target_w / target_h))) > slack:
        raise ImageError(f"a {width}x{height} image (aspect {width / height:.2f}) does not fit this bundle's "
                         f"{target_w}x{target_h} (aspect {target_w / target_h:.2f}) without distortion: crop it to "
                         f"that aspect, or build a bundle for it (adafv engine MODEL --resolution WxH)")  # fmt: skip


def crop_to_aspect(image: Image.Image, spec: dict) -> Image.Image:
    """The largest centred crop of `image` with a fixed-resolution bundle's aspect ratio (calibration data of any
    shape); images of other kinds of bundle are returned as they are."""
    if spec["kind"] != "qwen2vl":
        return image
    target = spec["resolution"]["width"] / spec["resolution"]["height"]
    width, height = image.size
    if width / height > target:
        new_w = max(1, round(height * target))
        left = (width - new_w) // 2
        return image.crop((left, 0, left + new_w, height))
    new_h = max(1, round(width / target))
    top = (height - new_h) // 2
    return image.crop((0, top, width, top + new_h))


def _fixed_resolution(image: Image.Image, spec: dict) -> np.ndarray:
    """The image resized to the bundle's resolution with the processor's own filter (the very PIL call its
    `resize` makes; an image of that size is passed through) -> uint8 (1, 3, H, W)."""
    check_aspect(image.size, spec)
    h, w = spec["resolution"]["height"], spec["resolution"]["width"]
    if image.size != (w, h):
        image = image.resize((w, h), spec["resample"])
    return np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1)[None])  # (1, 3, H, W)


def patchify(values: np.ndarray, spec: dict) -> np.ndarray:
    """float (1, 3, H, W) -> Qwen2-VL's `pixel_values` (rows*cols, 3*T*p*p): patches in merge-unit order, the frame
    repeated over the temporal patch (what the vision graph does inside; for tests and tools)."""
    p, m, t = spec["patch_size"], spec["merge_size"], spec["temporal_patch_size"]
    _, c, h, w = values.shape
    rows, cols = h // p, w // p
    x = values[0].reshape(c, rows // m, m, p, cols // m, m, p).transpose(1, 4, 2, 5, 0, 3, 6)  # (r, c, m, m, C, p, p)
    x = np.broadcast_to(x[:, :, :, :, :, None], (*x.shape[:5], t, p, p))
    return x.reshape(rows * cols, c * t * p * p)


def normalize(pixels: np.ndarray, spec: dict) -> np.ndarray:
    """uint8 `(N, 3, H, W)` -> float32 `pixel_values`, the processor's rescale + normalize (through `value_table`)."""
    table = value_table(spec)  # (3, 256)
    return table[np.arange(3)[None, :, None, None], pixels]  # (N, 3, H, W)


_RESIZER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="adafv-resize")


def _anyres_crops(image: Image.Image, spec: dict) -> tuple[list, tuple[int, int]]:
    """The base view (PIL) and the grid crops (uint8 HWC slices of one zero-padded canvas), and the grid."""
    resample = spec["resample"]
    grid_h, grid_w = select_best_resolution((image.height, image.width), spec["image_grid_pinpoints"])
    new_h, new_w = _fit_size((image.height, image.width), (grid_h, grid_w))
    size = spec["size"]
    if size.get("height") and size.get("width"):
        base_h, base_w = size["height"], size["width"]
    else:
        base_h = base_w = size["shortest_edge"]
    base = _RESIZER.submit(image.resize, (base_w, base_h), resample)  # concurrently with the grid's resize
    canvas = np.zeros((grid_h, grid_w, 3), dtype=np.uint8)
    top, left = (grid_h - new_h) // 2, (grid_w - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = np.asarray(image.resize((new_w, new_h), resample))
    side = crop_side(spec)
    crops = [canvas[i : i + side, j : j + side] for i in range(0, grid_h, side) for j in range(0, grid_w, side)]
    return [base.result(), *crops], (_ceil_div(grid_h, side), _ceil_div(grid_w, side))


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _finish_crop(crop, spec: dict) -> np.ndarray:
    """One crop (PIL image or uint8 HWC array) -> resized to `size` and centre-cropped, as a uint8 HWC array."""
    height, width = (crop.height, crop.width) if isinstance(crop, Image.Image) else crop.shape[:2]
    if spec["do_resize"]:
        new_h, new_w = _resize_size((height, width), spec["size"])
        if (new_h, new_w) != (height, width):
            if not isinstance(crop, Image.Image):
                crop = Image.fromarray(crop)
            crop = crop.resize((new_w, new_h), spec["resample"])
    crop = np.asarray(crop)
    if spec["do_center_crop"]:
        crop = _center_crop(crop, spec["crop_size"]["height"], spec["crop_size"]["width"])
    return crop


def _resize_size(image_size_hw: tuple[int, int], size: dict) -> tuple[int, int]:
    """Output `(height, width)` of the processor's resize: shortest edge (aspect kept, truncated), else exact."""
    height, width = image_size_hw
    if size.get("shortest_edge"):
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = size["shortest_edge"], int(size["shortest_edge"] * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)
    return size["height"], size["width"]


def _center_crop(image: np.ndarray, crop_h: int, crop_w: int) -> np.ndarray:
    """transformers' centre crop of a uint8 HWC array: a view when it fits, else zero-padded around the image."""
    height, width = image.shape[:2]
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    if crop_h <= height and crop_w <= width:
        return image[top : top + crop_h, left : left + crop_w]
    new_h, new_w = max(crop_h, height), max(crop_w, width)
    top_pad, left_pad = math.ceil((new_h - height) / 2), math.ceil((new_w - width) / 2)
    padded = np.zeros((new_h, new_w, 3), dtype=np.uint8)
    padded[top_pad : top_pad + height, left_pad : left_pad + width] = image
    top, left = top + top_pad, left + left_pad
    return padded[max(0, top) : min(new_h, top + crop_h), max(0, left) : min(new_w, left + crop_w)]


def value_table(spec: dict) -> np.ndarray:
    """(3, 256) float32: the processor's rescale + normalize of every byte value, per channel, in its arithmetic.
    The vision graph embeds this very table (export/graph.py), so the graph's pixel values are the processor's."""
    values = np.arange(256)
    if spec["do_rescale"]:
        values = (values.astype(np.float64) * spec["rescale_factor"]).astype(np.float32)
    else:
        values = values.astype(np.float32)
    if not spec["do_normalize"]:
        return np.repeat(values[None, :], 3, axis=0)
    mean = np.asarray(spec["image_mean"], dtype=np.float32)[:, None]
    std = np.asarray(spec["image_std"], dtype=np.float32)[:, None]
    return (values[None, :] - mean) / std
