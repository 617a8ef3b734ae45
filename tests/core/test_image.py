"""Image loading: every supported kind converts correctly, every bad file gets its named error."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermaseg.core.errors import ImageLoadError
from dermaseg.core.image import LesionImage, load_image


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _gradient(w: int = 64, h: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 4 % 256, yy * 5 % 256, (xx + yy) % 256], axis=2).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_lossless_formats_round_trip_exactly(fmt: str) -> None:
    rgb = _gradient()
    img = load_image(_save(Image.fromarray(rgb), fmt), name=f"x.{fmt.lower()}")
    assert img.rgb.dtype == np.uint8 and img.rgb.shape == (48, 64, 3)
    np.testing.assert_array_equal(img.rgb, rgb)
    assert not img.rgb.flags.writeable


def test_jpeg_loads_close_to_source() -> None:
    rgb = _gradient()
    img = load_image(_save(Image.fromarray(rgb), "JPEG", quality=95))
    assert np.abs(img.rgb.astype(int) - rgb).mean() < 6


def test_same_pixels_same_hash_whatever_the_container() -> None:
    rgb = _gradient()
    a = load_image(_save(Image.fromarray(rgb), "PNG"))
    b = load_image(_save(Image.fromarray(rgb), "BMP"))
    c = load_image(_save(Image.fromarray(rgb[::-1].copy()), "PNG"))
    assert a.sha256 == b.sha256 != c.sha256


def test_exif_orientation_is_applied() -> None:
    rgb = _gradient(64, 48)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img = load_image(_save(Image.fromarray(rgb), "JPEG", quality=95, exif=exif.tobytes()))
    assert img.rgb.shape == (64, 48, 3)
    expected = np.rot90(rgb, k=-1)
    assert np.abs(img.rgb.astype(int) - expected).mean() < 6


def test_grey_palette_rgba_cmyk_and_16bit_convert_to_rgb8() -> None:
    grey = load_image(_save(Image.new("L", (32, 32), 77), "PNG"))
    assert (grey.rgb == 77).all()

    pal = Image.new("P", (32, 32), 1)
    pal.putpalette([0, 0, 0, 200, 10, 20] + [0] * 762)
    assert (load_image(_save(pal, "PNG")).rgb == [200, 10, 20]).all()

    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 0
    rgba[:16, :, 3] = 255
    out = load_image(_save(Image.fromarray(rgba, "RGBA"), "PNG")).rgb
    assert (out[:16] == [255, 0, 0]).all() and (out[16:] == [255, 255, 255]).all()  # transparent -> white

    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    for fmt in ("JPEG", "TIFF"):
        red = load_image(_save(cmyk, fmt)).rgb.astype(int)
        assert red[..., 0].mean() > 200 and red[..., 1:].mean() < 60, fmt

    sixteen = np.full((32, 32), 65535, np.uint16)
    sixteen[:16] = 32896  # 128 * 257
    out = load_image(_save(Image.fromarray(sixteen), "PNG")).rgb
    assert (out[16:] == 255).all() and (out[:16] == 128).all()
    out = load_image(_save(Image.fromarray(sixteen), "TIFF")).rgb
    assert (out[16:] == 255).all() and (out[:16] == 128).all()


def test_plausible_resolution_becomes_a_calibration() -> None:
    rgb = _gradient()
    assert load_image(_save(Image.fromarray(rgb), "PNG", dpi=(72, 72))).calibration is None
    cal = load_image(_save(Image.fromarray(rgb), "TIFF", dpi=(1270, 1270))).calibration
    assert cal is not None and cal.source == "metadata" and cal.mm_per_px == pytest.approx(0.02, rel=1e-3)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header claims width x height (a decompression bomb's shape)."""
    data = bytearray(_save(Image.new("L", (16, 16)), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty"),
        (b"just some text, not pixels\n", "not a recognised image"),
        (_save(Image.new("RGB", (64, 64)), "PNG")[:60], "truncated or corrupt"),
        (_png_claiming(10000, 6000), "60 megapixels, above the limit of 50"),
        (_png_claiming(20000, 20000), "decompression bomb"),
        (_save(Image.new("RGB", (1, 1)), "PNG"), "too small"),
        (_save(Image.new("RGB", (64, 64)), "GIF"), "GIF images are not supported"),
        (_save(Image.new("RGB", (64, 64)), "WEBP"), "WEBP images are not supported"),
    ],
    ids=["zero-bytes", "text", "truncated-png", "too-large", "bomb", "1x1", "gif", "webp"],
)
def test_bad_input_gets_a_named_error(payload: bytes, message: str) -> None:
    with pytest.raises(ImageLoadError, match=message):
        load_image(payload, name="upload.png")


def test_truncated_jpeg_is_refused() -> None:
    data = _save(Image.fromarray(_gradient(256, 256)), "JPEG", quality=90)
    with pytest.raises(ImageLoadError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])


def test_multipage_tiff_is_refused() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, "TIFF", save_all=True, append_images=[Image.new("RGB", (32, 32))])
    with pytest.raises(ImageLoadError, match="2 frames"):
        load_image(buf.getvalue())


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageLoadError, match="folder"):
        load_image(tmp_path)


def test_from_array_validates() -> None:
    with pytest.raises(ImageLoadError, match="uint8"):
        LesionImage.from_array(np.zeros((32, 32, 3), np.float32))
    assert LesionImage.from_array(np.zeros((32, 32), np.uint8)).rgb.shape == (32, 32, 3)


def test_real_dev_images_load(dev_data) -> None:
    for case in dev_data[:5] + [c for c in dev_data if c.dataset != "PH2"][:2]:
        img = load_image(case.image)
        assert img.rgb.shape[:2] == case.load_mask().shape
