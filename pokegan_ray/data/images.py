"""Decoding, validation and augmentation of single images (pure Pillow + numpy, no Ray).

Every image Pillow can open, whatever its mode, becomes an RGB image flattened onto
white and padded to a square on white, so the whole Pokémon stays in frame. Files
that are not usable images raise `UnusableImage` with a reason a person understands.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageOps, UnidentifiedImageError

WHITE = (255, 255, 255)

# File name endings we treat as images. Anything else in a source folder (a README,
# a labels.csv) is ignored, not reported as skipped.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".svg")


class UnusableImage(ValueError):
    """A file that cannot be used as a training image; `reason` is for people."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DecodeLimits:
    min_side_px: int = 24
    # Pillow's own default limit; an image above it is treated as a decompression bomb.
    max_pixels: int = Image.MAX_IMAGE_PIXELS or 89_478_485


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_square_rgb(data: bytes, name: str, limits: DecodeLimits) -> Image.Image:
    """Decode `data` fully and return an RGB square on white; raise UnusableImage otherwise."""
    if len(data) == 0:
        raise UnusableImage("empty file (0 bytes)")
    head = data[:512].lstrip().lower()
    if name.lower().endswith(".svg") or head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        raise UnusableImage("SVG vector image: rasterise it to PNG first")
    image = _open_fully(data, limits)
    if min(image.size) < limits.min_side_px:
        width, height = image.size
        raise UnusableImage(f"too small: {width}x{height} px, the shorter side must be at least "
                            f"{limits.min_side_px} px")
    return pad_to_square(flatten_to_rgb(image))


def _open_fully(data: bytes, limits: DecodeLimits) -> Image.Image:
    with warnings.catch_warnings():
        # Pillow only warns between its limit and twice the limit; we refuse both.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_pixels:
                raise UnusableImage(_bomb_reason(width, height, limits))
            image.seek(0)  # first frame of an animated GIF/WebP
            image.load()  # decode everything now: truncation and corruption show up here
            return ImageOps.exif_transpose(image)
        except UnusableImage:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            width, height = _declared_size(data)
            raise UnusableImage(_bomb_reason(width, height, limits)) from None
        except UnidentifiedImageError:
            if head_is_text(data):
                raise UnusableImage("not an image: the file holds text") from None
            raise UnusableImage("not an image Pillow can read (unrecognised or corrupt header)") from None
        except OSError as error:
            if "truncated" in str(error).lower():
                raise UnusableImage("truncated image data (the file ends early)") from None
            raise UnusableImage(f"corrupt image data ({error})") from None
        except (SyntaxError, ValueError, EOFError, IndexError, struct.error) as error:
            raise UnusableImage(f"corrupt image data ({type(error).__name__}: {error})") from None


def head_is_text(data: bytes) -> bool:
    head = data[:1024]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _declared_size(data: bytes) -> tuple[int, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(io.BytesIO(data)).size
        except Exception:  # noqa: BLE001 - only for the message
            return (0, 0)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _bomb_reason(width: int, height: int, limits: DecodeLimits) -> str:
    return (f"decompression bomb: {width}x{height} px exceeds the {limits.max_pixels:,}-pixel limit")


def flatten_to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode → 8-bit RGB, transparent parts composited onto white."""
    mode = image.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16/32-bit greyscale: Pillow's convert("L") clips at 255; scale the range instead.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
        mode = "L"
    has_alpha = mode in ("RGBA", "LA", "La", "PA", "RGBa") or (
        mode in ("P", "L", "RGB") and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def pad_to_square(image: Image.Image) -> Image.Image:
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new("RGB", (side, side), WHITE)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def resize(image: Image.Image, size_px: int) -> Image.Image:
    """Antialiased resize (Lanczos) of a square image."""
    if image.size == (size_px, size_px):
        return image
    return image.resize((size_px, size_px), Image.Resampling.LANCZOS)


@dataclass(frozen=True)
class AugmentSpec:
    """Ranges of the random augmentations; small, so each version is still the same Pokémon."""

    flip_probability: float = 0.5
    max_rotation_deg: float = 12.0
    max_translation_fraction: float = 0.06
    brightness: float = 0.12
    contrast: float = 0.12
    saturation: float = 0.2
    max_hue_shift: float = 0.04  # fraction of the colour wheel


def augmentation_rng(seed: int, source_key: str, augmentation_id: int) -> np.random.Generator:
    """One generator per (seed, image, version): the result does not depend on worker or order."""
    digest = hashlib.sha256(f"{seed}\x00{source_key}\x00{augmentation_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def augment(image: Image.Image, rng: np.random.Generator, spec: AugmentSpec = AugmentSpec()) -> Image.Image:
    """A flipped, rotated, shifted and colour-jittered version; background stays white."""
    side = image.size[0]
    if rng.random() < spec.flip_probability:
        image = ImageOps.mirror(image)
    angle = rng.uniform(-spec.max_rotation_deg, spec.max_rotation_deg)
    shift_x, shift_y = rng.uniform(-spec.max_translation_fraction, spec.max_translation_fraction, 2) * side
    image = image.rotate(angle, resample=Image.Resampling.BICUBIC, translate=(shift_x, shift_y),
                         fillcolor=WHITE)
    background = np.all(np.asarray(image) >= 250, axis=-1)

    image = ImageEnhance.Brightness(image).enhance(1 + rng.uniform(-spec.brightness, spec.brightness))
    image = ImageEnhance.Contrast(image).enhance(1 + rng.uniform(-spec.contrast, spec.contrast))
    image = ImageEnhance.Color(image).enhance(1 + rng.uniform(-spec.saturation, spec.saturation))
    hsv = np.array(image.convert("HSV"))
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + round(rng.uniform(-1, 1) * spec.max_hue_shift * 256)) % 256
    pixels = np.array(Image.fromarray(hsv, "HSV").convert("RGB"))
    # Jitter would tint the white background; keep one background colour across the set.
    pixels[background] = 255
    return Image.fromarray(pixels, "RGB")


def versions(square: Image.Image, source_key: str, *, count: int, seed: int, work_px: int):
    """Yield (augmentation_id, image) for the original (id 0) and `count` augmented versions.

    Augmentation runs at `work_px` (twice the largest output resolution) so rotation
    and shifts resample at a finer grid than the output, then each output resolution
    is an antialiased downscale of the same augmented image.
    """
    base = resize(square, work_px)
    yield 0, base
    for augmentation_id in range(1, count + 1):
        yield augmentation_id, augment(base, augmentation_rng(seed, source_key, augmentation_id))
