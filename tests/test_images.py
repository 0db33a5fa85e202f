"""adafv.runtime.images: every kind of bad or unusual image file gets a clear answer."""

import numpy as np
import pytest
from PIL import Image

from adafv.runtime import ImageError, load_image


def test_missing_empty_corrupt(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty \\(0 bytes\\)"):
        load_image(tmp_path / "empty.png")
    (tmp_path / "text.jpg").write_text("hello, not an image")
    with pytest.raises(ImageError, match="not an image file"):
        load_image(tmp_path / "text.jpg")
    good = tmp_path / "good.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageError, match="cannot decode image"):
        load_image(tmp_path / "truncated.png")
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path)


def test_modes_become_rgb_like_transformers(tmp_path):
    from transformers.image_transforms import convert_to_rgb

    rng = np.random.RandomState(0)
    rgba = Image.fromarray(rng.randint(0, 255, (20, 30, 4), dtype=np.uint8), "RGBA")
    cases = {
        "rgba.png": rgba,
        "palette.png": rgba.convert("RGB").convert("P"),
        "cmyk.jpg": rgba.convert("RGB").convert("CMYK"),
        "gray.png": rgba.convert("L"),
        "la.png": rgba.convert("LA"),
    }
    for name, image in cases.items():
        image.save(tmp_path / name)
        got = load_image(tmp_path / name)
        assert got.mode == "RGB" and got.size == (30, 20), name
        with Image.open(tmp_path / name) as raw:
            expected = convert_to_rgb(raw, return_numpy=True)
        assert np.array_equal(np.asarray(got), expected), name


def test_sixteen_bit_grayscale(tmp_path):
    a = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "deep.png")
    got = np.asarray(load_image(tmp_path / "deep.png"))
    assert got.shape == (32, 32, 3) and got.max() > 200 and got.min() == 0  # scaled, not clipped to white


def png_header_only(path, width, height):
    """A PNG whose header claims width x height (what a decoder sees before allocating anything)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (3 * width + 1) * 4)  # a few rows only
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def jpeg_header_claiming(path, width, height):
    """A small real JPEG whose frame header (SOF0) is rewritten to claim width x height."""
    import io
    import struct

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind, size", [("png", (20000, 20000)), ("png", (9000, 9000)), ("jpg", (9000, 9000))])
def test_huge_image_is_refused_from_its_header(tmp_path, monkeypatch, kind, size):
    from PIL import ImageFile

    path = tmp_path / f"huge.{kind}"
    (png_header_only if kind == "png" else jpeg_header_claiming)(path, *size)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # PIL's own bomb check aside: ours must refuse
    with Image.open(path) as im:
        assert im.size == size  # what the header claims

    def no_decoding(self):
        raise AssertionError("decoded pixels of an image that was too large")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageError, match="too large to decode safely: 9000x9000|too large.*20000x20000"):
        load_image(path)
