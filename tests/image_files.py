"""Builders of real image files for tests: valid ones in every Pillow mode and each kind of bad file."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def pokemon_like(size: int = 96, color=(220, 40, 40), seed: int = 0) -> np.ndarray:
    """An RGB array: a coloured blob with a darker eye on white, different for each seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    cx, cy = size / 2 + rng.uniform(-8, 8), size / 2 + rng.uniform(-8, 8)
    radius = size * rng.uniform(0.25, 0.4)
    pixels = np.full((size, size, 3), 255, np.uint8)
    body = (x - cx) ** 2 + (y - cy) ** 2 < radius ** 2
    pixels[body] = color
    eye = (x - cx - radius / 3) ** 2 + (y - cy + radius / 3) ** 2 < (radius / 6) ** 2
    pixels[eye] = (20, 20, 20)
    return pixels


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def valid_images() -> dict[str, bytes]:
    """One valid file per mode/format the decoder must accept."""
    rgb = Image.fromarray(pokemon_like(96, (220, 40, 40), seed=1))
    files = {
        "rgb.png": encode(rgb, "PNG"),
        "rgb.jpg": encode(rgb, "JPEG", quality=95),
        "rgb.webp": encode(rgb, "WEBP"),
        "rgb.bmp": encode(rgb, "BMP"),
        "animated.gif": _animated_gif(),
        "grey.jpg": encode(rgb.convert("L"), "JPEG"),
        "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG"),
        "bilevel.bmp": encode(rgb.convert("1"), "BMP"),
        "wide.png": encode(Image.fromarray(pokemon_like(120, (40, 160, 40), seed=2)[30:90]), "PNG"),
    }
    # RGBA: transparent background, opaque blue body.
    rgba = np.zeros((80, 80, 4), np.uint8)
    rgba[20:60, 20:60] = (30, 60, 200, 255)
    files["transparent.png"] = encode(Image.fromarray(rgba, "RGBA"), "PNG")
    files["greyalpha.png"] = encode(Image.fromarray(rgba, "RGBA").convert("LA"), "PNG")
    # Palette with a transparent index (like many sprite GIFs/PNGs).
    palette = Image.fromarray(rgba[..., :3]).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    transparent_index = palette.getpixel((0, 0))
    files["palette.png"] = encode(palette, "PNG", transparency=transparent_index)
    files["palette.gif"] = encode(palette, "GIF", transparency=transparent_index)
    # 16-bit greyscale.
    sixteen = (np.asarray(rgb.convert("L"), np.uint16) * 257).astype(np.uint16)
    files["sixteen.png"] = encode(Image.fromarray(sixteen), "PNG")
    return files


def _animated_gif() -> bytes:
    frames = [Image.fromarray(pokemon_like(64, (200, 200, 0), seed=s)).convert("P") for s in (3, 4)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def bad_files() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, a word the skip reason must contain)."""
    png = encode(Image.fromarray(pokemon_like(96, seed=5)), "PNG")
    corrupted = bytearray(png)
    idat = png.index(b"IDAT")
    for offset in range(idat + 8, idat + 60):
        corrupted[offset] ^= 0x5A
    return {
        "empty.png": (b"", "empty"),
        "truncated.png": (png[: len(png) // 2], "truncated"),
        "corrupted.png": (bytes(corrupted), "corrupt"),
        "notes.jpg": (b"this is a text file, not a JPEG\n" * 4, "text"),
        "vector.svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><circle r="9"/></svg>',
                       "SVG"),
        "bomb.png": (decompression_bomb_png(30_000, 30_000), "decompression bomb"),
        "tiny.png": (encode(Image.new("RGB", (8, 8), (255, 0, 0)), "PNG"), "too small"),
    }


def decompression_bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge image (the data is a few bytes of zeros)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def write_files(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def write_two_type_source(folder: Path, labelled: bool) -> None:
    """8 small Pokémon-like PNGs, 4 "fire" and 4 "water": labelled by sub-folder, or flat and unlabelled."""
    colours = {"fire": (230, 60, 20), "water": (30, 90, 230)}
    write_files(folder, {(f"{kind}/{i}.png" if labelled else f"{kind}{i}.png"):
                         encode(Image.fromarray(pokemon_like(64, colours[kind], seed=i)), "PNG")
                         for kind in colours for i in range(4)})


def prepare_two_type_set(tmp_path_factory) -> str:
    """The labelled two-type source prepared at 64 px: 8 images x 3 versions = 24 rows, 2 classes."""
    from pokegan_ray.data import PrepareOptions, prepare

    source = tmp_path_factory.mktemp("source")
    write_two_type_source(source, labelled=True)
    dest = str(tmp_path_factory.mktemp("data"))
    prepare(str(source), dest, PrepareOptions(resolutions=(64,), augment=2))
    return dest
