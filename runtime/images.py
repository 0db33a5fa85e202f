"""Decode an image file into an RGB PIL image, with a clear error for everything that cannot be one.

Transparency is composited onto white and palette, CMYK and grayscale images are converted to RGB, as transformers'
`convert_to_rgb` does, so the runtime and the HF processor see the same pixels. 16-bit (and 32-bit integer)
grayscale is scaled to 8 bits first: transformers' own conversion (PIL's) clips such values at 255, which turns most
16-bit images white.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from .errors import ImageError

MAX_PIXELS = 64_000_000  # larger images are refused from their header, before decoding


def to_rgb(image):
    """Any PIL image -> RGB, compositing transparency onto white (transformers' rule)."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: scale to 8 bit, as a viewer would
        import numpy as np

        a = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(a.max()), 1.0)
        image = Image.fromarray(np.clip(a / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS):
    """Open, check and fully decode an image file; returns an RGB PIL image."""
    p = Path(path)
    if not p.exists():
        raise ImageError(f"image file not found: {p}")
    if not p.is_file():
        raise ImageError(f"not a file: {p}")
    if p.stat().st_size == 0:
        raise ImageError(f"image file is empty (0 bytes): {p}")
    return _decode(p, str(p), max_pixels)


def load_image_bytes(data: bytes, max_pixels: int = MAX_PIXELS, name: str = "the image"):
    """The same checks and decoding for an encoded image held in memory (e.g. a data URL's payload)."""
    import io

    if not data:
        raise ImageError(f"{name} is empty (0 bytes)")
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(source, name: str, max_pixels: int):
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # PIL warns above 89 MP; our own limit below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(source)
        with im:
            width, height = im.size
            if width < 1 or height < 1:
                raise ImageError(f"image has no pixels ({width}x{height}): {name}")
            if width * height > max_pixels:  # refused from the header, before any pixel is decoded
                raise ImageError(
                    f"image is too large to decode safely: {width}x{height} = {width * height / 1e6:.0f} MP "
                    f"(limit {max_pixels / 1e6:.0f} MP): {name}"
                )
            im.load()
            return to_rgb(im)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"image is too large to decode safely ({e}): {name}") from e
    except UnidentifiedImageError as e:
        raise ImageError(f"not an image file PIL can read: {name}") from e
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data
        raise ImageError(f"cannot decode image {name}: {e}") from e
