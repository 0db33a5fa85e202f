"""Describe a model's HF image processor as the plain JSON-able dict `adafv.runtime.preprocess` executes.

`image_processor_spec(processor)` reads the processor's attributes (a full `LlavaNextProcessor` / `LlavaProcessor`
or its `image_processor`) and returns the spec the bundle stores; the runtime then reproduces the processor's
`pixel_values` bit for bit without torch or transformers. Supported: transformers' PIL-backend
`LlavaNextImageProcessorPil` (anyres), `CLIPImageProcessorPil` (LLaVA-1.5) and `Qwen2VLImageProcessorPil` (Qwen2-VL /
Qwen2.5-VL, at the bundle's fixed resolution), with the options those models use.
Anything else raises `ValueError` naming the processor and the option, rather than producing a spec whose output
would silently differ.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

from adafv.runtime.preprocess import crop_side

KINDS = {"LlavaNextImageProcessorPil": "anyres", "CLIPImageProcessorPil": "clip", "Qwen2VLImageProcessorPil": "qwen2vl"}
# PIL resample ids: NEAREST, LANCZOS, BILINEAR, BICUBIC, BOX, HAMMING
PIL_RESAMPLE_IDS = range(6)
PIL_BILINEAR = 2  # what transformers' PIL backend uses when `resample` is None


def image_processor_spec(processor: Any, resolution: tuple[int, int] | None = None) -> dict:
    """HF processor or image processor -> the runtime's preprocessing spec (see `adafv.runtime.preprocess`).
    `resolution` (height, width): the fixed resolution of a dynamic-resolution (Qwen2-VL) bundle."""
    image_processor = getattr(processor, "image_processor", processor)
    name = type(image_processor).__name__
    if name not in KINDS:
        if name + "Pil" in KINDS:
            raise ValueError(
                f"{name} is the torchvision backend, whose resize differs slightly from PIL's; the runtime reproduces "
                f"the PIL backend exactly: load the processor with backend='pil' "
                f"(e.g. AutoProcessor.from_pretrained(path, backend='pil')) or use {name}Pil"
            )
        raise ValueError(f"unsupported image processor {name}: supported are {', '.join(KINDS)}")
    kind = KINDS[name]

    def option(key: str):
        return getattr(image_processor, key, None)

    def fail(message: str):
        raise ValueError(f"{name}: {message}; the runtime cannot reproduce it")

    if kind == "qwen2vl":
        return _qwen2vl(image_processor, name, resolution)
    if option("data_format") not in (None, "channels_first"):
        fail(f"data_format={option('data_format')!r} (only channels_first is supported)")
    size = _size_dict(option("size"), name, "size")
    if not (size.get("shortest_edge") or (size.get("height") and size.get("width"))):
        fail(f"size={size} needs 'shortest_edge' or 'height' and 'width'")
    if set(size) - {"shortest_edge", "height", "width"}:
        fail(f"size={size} (only 'shortest_edge' and/or 'height'/'width' are supported)")
    crop_size = _size_dict(option("crop_size"), name, "crop_size")
    do_center_crop = bool(option("do_center_crop"))
    if do_center_crop and not (crop_size.get("height") and crop_size.get("width")):
        fail(f"crop_size={crop_size} needs 'height' and 'width' for the centre crop")

    resample = option("resample")
    if resample is None:
        resample = PIL_BILINEAR
    if not isinstance(resample, Integral) or int(resample) not in PIL_RESAMPLE_IDS:
        fail(f"resample={resample!r} is not a PIL resampling filter")

    do_rescale, do_normalize = bool(option("do_rescale")), bool(option("do_normalize"))
    spec = {
        "kind": kind,
        "size": size,
        "crop_size": crop_size,
        "resample": int(resample),
        "do_resize": bool(option("do_resize")),
        "do_center_crop": do_center_crop,
        "do_rescale": do_rescale,
        "rescale_factor": float(option("rescale_factor")) if do_rescale else None,
        "do_normalize": do_normalize,
        "image_mean": _per_channel(option("image_mean"), name, "image_mean") if do_normalize else None,
        "image_std": _per_channel(option("image_std"), name, "image_std") if do_normalize else None,
    }
    if kind == "anyres":
        spec["image_grid_pinpoints"] = _pinpoints(option("image_grid_pinpoints"), spec, name)
        if not (do_center_crop or (spec["do_resize"] and size.get("height") and size.get("width"))):
            fail("without a centre crop or a fixed resize (height/width), crops of one image differ in size")
    elif option("do_pad") and option("pad_size") is not None:
        fail(f"do_pad with pad_size={dict(option('pad_size'))}")
    return spec


def _size_dict(value: Any, name: str, key: str) -> dict[str, int]:
    """SizeDict / dict / None -> a plain dict of its set integer entries."""
    if value is None:
        return {}
    try:
        entries = dict(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: {key}={value!r} is not a size dictionary") from e
    return {k: int(v) for k, v in entries.items() if v is not None}


def _per_channel(value: Any, name: str, key: str) -> list[float]:
    """A scalar or 3 values -> 3 floats (transformers repeats a scalar over the channels)."""
    if isinstance(value, Real):
        return [float(value)] * 3
    if value is None or len(value) != 3:
        raise ValueError(f"{name}: {key}={value!r} must be a number or 3 numbers (RGB)")
    return [float(v) for v in value]


def _pinpoints(value: Any, spec: dict, name: str) -> list[list[int]]:
    """Grid pinpoints as [[h, w], ...], each a multiple of the crop side (the model's grid assumes it)."""
    if not value:
        raise ValueError(f"{name}: image_grid_pinpoints is empty")
    pinpoints = [[int(h), int(w)] for h, w in value]
    side = crop_side(spec)  # as LlavaNextImageProcessorPil derives it
    uneven = [p for p in pinpoints if p[0] % side or p[1] % side]
    if uneven:
        raise ValueError(f"{name}: image_grid_pinpoints {uneven} are not multiples of the crop side {side}")
    return pinpoints


def _qwen2vl(image_processor: Any, name: str, resolution: tuple[int, int] | None) -> dict:
    """Qwen2VLImageProcessorPil at a bundle's fixed resolution: the processor must map that resolution to itself
    (smart_resize within its min/max pixels), so an image of that size is preprocessed exactly as the processor
    would; the runtime resizes other images of the same aspect to it with the processor's own PIL filter."""
    from adafv.archs.qwen import smart_resize

    option = lambda key: getattr(image_processor, key, None)  # noqa: E731
    if resolution is None:
        raise ValueError(f"{name}: a dynamic-resolution processor needs the bundle's fixed resolution")
    size = _size_dict(option("size"), name, "size")
    lo, hi = size.get("shortest_edge"), size.get("longest_edge")
    if not lo or not hi:
        raise ValueError(f"{name}: size={size} needs 'shortest_edge' (min pixels) and 'longest_edge' (max pixels)")
    patch, merge, temporal = int(option("patch_size")), int(option("merge_size")), int(option("temporal_patch_size"))
    h, w = resolution
    if smart_resize(h, w, patch * merge, lo, hi) != (h, w):
        fits = smart_resize(h, w, patch * merge, lo, hi)
        raise ValueError(f"{name}: --resolution {w}x{h} is outside the processor's range of {lo}..{hi} pixels "
                         f"(it would resize it to {fits[1]}x{fits[0]}): choose a resolution within it")  # fmt: skip
    resample = option("resample")
    resample = PIL_BILINEAR if resample is None else resample
    if not isinstance(resample, Integral) or int(resample) not in PIL_RESAMPLE_IDS:
        raise ValueError(f"{name}: resample={resample!r} is not a PIL resampling filter")
    do_rescale, do_normalize = bool(option("do_rescale")), bool(option("do_normalize"))
    if not option("do_resize"):
        raise ValueError(f"{name}: do_resize=False; the runtime resizes every image to the bundle's resolution")
    return {
        "kind": "qwen2vl",
        "resolution": {"height": h, "width": w},
        "resample": int(resample),
        "do_rescale": do_rescale,
        "rescale_factor": float(option("rescale_factor")) if do_rescale else None,
        "do_normalize": do_normalize,
        "image_mean": _per_channel(option("image_mean"), name, "image_mean") if do_normalize else None,
        "image_std": _per_channel(option("image_std"), name, "image_std") if do_normalize else None,
        "patch_size": patch,
        "merge_size": merge,
        "temporal_patch_size": temporal,
        "min_pixels": int(lo),
        "max_pixels": int(hi),
    }
