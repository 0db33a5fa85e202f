"""Camera frames as ROS 2 sends them, to the RGB PIL image the runtime takes: `sensor_msgs/Image` in rgb8, bgr8,
mono8 (and rgba8/bgra8) with any row padding (`step`), and `sensor_msgs/CompressedImage` (JPEG, PNG). Pure
numpy and Pillow (no cv_bridge, no rclpy): the node calls these with a message's fields, and tests call them
directly. A frame that cannot be used is one FrameError line naming what is wrong with it."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from adafv.errors import InputError

CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
COMPRESSED = ("jpeg", "jpg", "png")
MAX_PIXELS = 64_000_000  # 8K is 33 MP: anything larger is a corrupt header, not a camera


class FrameError(InputError):
    """A camera frame the node cannot use (logged and skipped; the previous frame stays the latest)."""


@dataclass(frozen=True)
class Frame:
    """The latest usable frame: the image, its header's stamp (seconds; 0.0 when the camera left it unset) and
    frame_id, and when the node received it (its clock, seconds)."""

    image: Image.Image
    stamp: float
    frame_id: str
    received: float


def from_raw(encoding: str, height: int, width: int, step: int, data: bytes) -> Image.Image:
    """A `sensor_msgs/Image` -> RGB image. 8-bit encodings only (16-bit depth and Bayer are not camera colour)."""
    channels = CHANNELS.get(encoding.lower())
    if channels is None:
        raise FrameError(f"encoding {encoding!r} is not supported (use one of {', '.join(CHANNELS)})")
    if height < 1 or width < 1 or height * width > MAX_PIXELS:
        raise FrameError(f"a {width}x{height} frame is not an image")
    if step < width * channels:
        raise FrameError(f"step {step} is shorter than a row of {width} {encoding} pixels ({width * channels} bytes)")
    if len(data) != step * height:
        raise FrameError(f"{len(data)} bytes of data for {height} rows of step {step} ({step * height} expected)")
    rows = np.frombuffer(bytes(data), dtype=np.uint8).reshape(height, step)  # (H, step)
    pixels = rows[:, : width * channels].reshape(height, width, channels)  # (H, W, C)
    if encoding.lower() == "mono8":
        return Image.fromarray(pixels[:, :, 0], "L").convert("RGB")
    if encoding.lower().startswith("bgr"):
        pixels = pixels[:, :, [2, 1, 0]]  # (H, W, 3) RGB, alpha dropped
    return Image.fromarray(np.ascontiguousarray(pixels[:, :, :3]), "RGB")


def from_compressed(fmt: str, data: bytes) -> Image.Image:
    """A `sensor_msgs/CompressedImage` (format "jpeg", "png", or image_transport's "rgb8; jpeg compressed bgr8")
    -> RGB image, decoded now (a frame that does not decode is skipped at once, not at question time)."""
    if not data:
        raise FrameError("a compressed frame with no data")
    kind = fmt.lower()
    if kind and not any(k in kind for k in COMPRESSED):
        raise FrameError(f"compressed format {fmt!r} is not supported (JPEG or PNG)")
    try:
        image = Image.open(io.BytesIO(bytes(data)))
        if image.width * image.height > MAX_PIXELS:
            raise FrameError(f"a {image.width}x{image.height} compressed frame is larger than any camera's")
        image.load()
    except FrameError:
        raise
    except Exception as e:  # Pillow raises several kinds for a truncated or foreign file
        raise FrameError(f"a compressed frame that does not decode ({type(e).__name__}: {e})") from None
    return image.convert("RGB")
