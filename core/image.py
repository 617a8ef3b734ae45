"""Load and validate images into `LesionImage`: 8-bit RGB, upright, hashed, size-limited.

Accepted: JPEG (and MPO), PNG, TIFF, BMP. EXIF orientation is applied; grey, palette, RGBA, CMYK and
16-bit images are converted to 8-bit RGB (alpha composited over white, 16-bit scaled by 1/257).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from dermaseg.core.calibration import Calibration
from dermaseg.core.errors import ImageLoadError, read_user_file

SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "TIFF", "BMP"})
# File name suffixes (lower case) of those formats: what a folder scan or a file picker offers.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
MIN_SIDE = 16
DEFAULT_MAX_PIXELS = 50_000_000
# Resolutions below this (px/inch) are screen defaults (72, 96, 150...), not a physical scale of skin.
MIN_PLAUSIBLE_DPI = 300.0


@dataclass(frozen=True, eq=False)
class LesionImage:
    """An image ready for segmentation.

    rgb: uint8 array (H, W, 3), upright (EXIF orientation applied), read-only.
    sha256: hex digest of the pixels and shape, so the same picture saved twice shares one embedding.
    name: a display name (file name, or what the caller gave).
    calibration: mm per pixel when known (from the file's metadata or set later by the user).
    """

    rgb: np.ndarray
    sha256: str
    name: str = "image"
    calibration: Calibration | None = field(default=None)

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    def with_calibration(self, calibration: Calibration | None) -> LesionImage:
        return LesionImage(self.rgb, self.sha256, self.name, calibration)

    def mirrored(self) -> LesionImage:
        """The image flipped left-right (its own pixels, hence its own sha256 and embedding)."""
        return LesionImage.from_array(self.rgb[:, ::-1], f"{self.name} (mirrored)", self.calibration)

    @classmethod
    def from_array(cls, rgb: np.ndarray, name: str = "image", calibration: Calibration | None = None) -> LesionImage:
        """Wrap an (H, W, 3) uint8 array (or (H, W) grey, or (H, W, 4) RGBA) after validation."""
        arr = np.asarray(rgb)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ImageLoadError(f"{name}: expected an (H, W, 3) RGB array, got shape {arr.shape}")
        if arr.dtype != np.uint8:
            raise ImageLoadError(f"{name}: expected 8-bit pixels (uint8), got {arr.dtype}")
        if arr.shape[2] == 4:
            arr = _composite_over_white(arr)
        _check_size(arr.shape[1], arr.shape[0], DEFAULT_MAX_PIXELS, name)
        arr = np.ascontiguousarray(arr)
        arr.setflags(write=False)
        return cls(arr, pixel_sha256(arr), name, calibration)


def pixel_sha256(rgb: np.ndarray) -> str:
    """SHA-256 of an (H, W, 3) uint8 array, including its shape."""
    h = hashlib.sha256(f"{rgb.shape[0]}x{rgb.shape[1]}x{rgb.shape[2]}:".encode())
    h.update(np.ascontiguousarray(rgb).data)
    return h.hexdigest()


def load_image(
    source: str | Path | bytes | BinaryIO,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> LesionImage:
    """Read a file (path, bytes or binary stream) into a `LesionImage`, or raise `ImageLoadError`."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = name or path.name
        data = read_user_file(path, name, "an image file", ImageLoadError)
    elif isinstance(source, bytes):
        data = source
    else:
        data = source.read()
    name = name or "image"
    if len(data) == 0:
        raise ImageLoadError(f"{name}: the file is empty (0 bytes)")
    rgb, dpi = _decode(data, name, max_pixels)
    calibration = Calibration.from_dpi(dpi) if dpi else None
    rgb.setflags(write=False)
    return LesionImage(rgb, pixel_sha256(rgb), name, calibration)


def _decode(data: bytes, name: str, max_pixels: int) -> tuple[np.ndarray, float | None]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageLoadError(f"{name}: not a recognised image; supported formats are JPEG, PNG, TIFF and BMP") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(f"{name}: refused as a decompression bomb ({e})") from None
    except OSError as e:  # the header was recognised but the file ends or breaks inside it
        raise ImageLoadError(f"{name}: the file is truncated or corrupt ({e})") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure is a bad file to the user
        raise ImageLoadError(f"{name}: cannot be read as an image ({e})") from None
    with img:
        if img.format not in SUPPORTED_FORMATS:
            raise ImageLoadError(f"{name}: {img.format or 'this'} images are not supported; use JPEG, PNG, TIFF or BMP")
        if getattr(img, "n_frames", 1) > 1 and img.format != "MPO":
            raise ImageLoadError(
                f"{name}: has {img.n_frames} frames or pages; save the one to annotate as a single image"
            )
        _check_size(img.width, img.height, max_pixels, name)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img.load()
                upright = ImageOps.exif_transpose(img) or img
                rgb = _to_rgb8(upright)
        except OSError as e:
            raise ImageLoadError(f"{name}: the file is truncated or corrupt ({e})") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageLoadError(f"{name}: refused as a decompression bomb ({e})") from None
        except (ValueError, SyntaxError, TypeError) as e:
            raise ImageLoadError(f"{name}: cannot be decoded ({e})") from None
        return rgb, _plausible_dpi(img)


def _check_size(width: int, height: int, max_pixels: int, name: str) -> None:
    if width * height > max_pixels:
        raise ImageLoadError(
            f"{name}: {width}x{height} is {width * height / 1e6:.0f} megapixels, above the limit of "
            f"{max_pixels / 1e6:.0f}; downscale it first"
        )
    if min(width, height) < MIN_SIDE:
        raise ImageLoadError(f"{name}: {width}x{height} is too small; each side needs {MIN_SIDE} px or more")


def _to_rgb8(img: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if mode == "F" and a.size and np.nanmax(a) <= 1.0:
            a = a * 255.0
        elif mode != "F":
            a = a / 257.0  # 0..65535 -> 0..255
        g = np.clip(np.nan_to_num(np.rint(a)), 0, 255).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    if mode == "CMYK":
        icc = img.info.get("icc_profile")
        if icc:
            try:
                src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
                return np.asarray(ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode="RGB"))
            except (ImageCms.PyCMSError, OSError):
                pass  # fall back to Pillow's naive conversion
        return np.asarray(img.convert("RGB"))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        return _composite_over_white(np.asarray(img.convert("RGBA")))
    return np.asarray(img if mode == "RGB" else img.convert("RGB"))  # convert would copy an RGB image first


def _composite_over_white(rgba: np.ndarray) -> np.ndarray:
    a = rgba[:, :, 3:4].astype(np.float32) / 255.0
    out = rgba[:, :, :3].astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _plausible_dpi(img: Image.Image) -> float | None:
    dpi = img.info.get("dpi")
    if not dpi:
        return None
    try:
        x, y = float(dpi[0]), float(dpi[1])
    except (TypeError, ValueError, IndexError):
        return None
    if x >= MIN_PLAUSIBLE_DPI and abs(x - y) / x < 0.01:
        return x
    return None
