"""Decode an image file into an RGB PIL image, with a clear error for everything that cannot be one.

Transparency is composited onto white and palette, CMYK and grayscale images are converted to RGB, as transformers'
`convert_to_rgb` does, so the runtime and the HF processor see the same pixels. 16-bit (and 32-bit integer)
grayscale is scaled to 8 bits first: transformers' own conversion (PIL's) clips such values at 255, which turns most
16-bit images white. Float images (mode F, e.g. a float TIFF) are scaled the same way ([0, 1] as it is, else by
their peak); one with NaN or infinite pixels is refused.

The EXIF orientation is applied on decoding (a phone's portrait JPEG is stored landscape with Orientation 6), as
transformers' `load_image` does: every way an image enters adafv (run, serve, eval, calib, show, `load_image`) goes
through `_decode`, so each sees the image upright.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from .errors import ImageError

MAX_PIXELS = 64_000_000  # larger images are refused from their header, before decoding


def to_rgb(image):
    """Any PIL image -> RGB, compositing transparency onto white (transformers' rule). An image that cannot be one
    (closed, or a pixel format PIL cannot convert) is an ImageError."""
    try:
        return _to_rgb(image)
    except ImageError:
        raise
    except (ValueError, OSError) as e:  # "Operation on closed image", "conversion from X to Y not supported"
        raise ImageError(f"the image cannot be converted to RGB (mode {getattr(image, 'mode', '?')}): {e}") from e


def _to_rgb(image):
    from PIL import Image

    image.load()  # a closed image fails here, in one place
    if image.mode == "RGB":
        return image
    if image.mode in ("La", "RGBa", "PA"):  # premultiplied alpha, or palette + alpha: to plain alpha first
        image = image.convert({"La": "LA", "RGBa": "RGBA", "PA": "RGBA"}[image.mode])
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16/32-bit, float: scale to 8 bit, as a viewer would
        import numpy as np

        a = np.asarray(image, dtype=np.float64)
        if not np.isfinite(a).all():
            raise ImageError("the image has NaN or infinite pixel values (a float image): it cannot be shown as RGB")
        if image.mode.startswith("I;16"):
            peak = 65535.0
        elif image.mode == "F" and a.max() <= 1.0:
            peak = 1.0  # a float image in [0, 1]
        else:
            peak = max(float(a.max()), 1.0)
        image = Image.fromarray(np.clip(a / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def upright(image):
    """The image as its EXIF Orientation says it is seen (1..8); unchanged without one."""
    from PIL import ImageOps

    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # unreadable EXIF: as stored
        return image
    if orientation in (None, 1):
        return image
    return ImageOps.exif_transpose(image)


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
            return to_rgb(upright(im))
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"image is too large to decode safely ({e}): {name}") from e
    except UnidentifiedImageError as e:
        raise ImageError(f"not an image file PIL can read: {name}") from e
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data
        raise ImageError(f"cannot decode image {name}: {e}") from e
