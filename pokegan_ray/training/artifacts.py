"""What a person looks at after a run: sample grids, a progress GIF, a plot of losses and FID.

Pure functions from tensors / metric histories to PNG and GIF bytes, so the loop can put
them wherever the run lives (a local folder or S3) through `storage.Location`.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image, ImageDraw


def to_uint8_images(images: torch.Tensor) -> np.ndarray:
    """Generator output (N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8, rounded as FID quantises."""
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()


def grid_image(images: torch.Tensor, columns: int | None = None, padding_px: int = 2,
               row_labels: list[str] | None = None) -> Image.Image:
    """Tile images into one picture on a white background; optional labels left of each row."""
    pixels = to_uint8_images(images)
    count, height, width, _ = pixels.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    label_px = 64 if row_labels else 0
    canvas = Image.new("RGB", (label_px + columns * (width + padding_px) + padding_px,
                               rows * (height + padding_px) + padding_px), (255, 255, 255))
    for index in range(count):
        row, column = divmod(index, columns)
        canvas.paste(Image.fromarray(pixels[index]),
                     (label_px + padding_px + column * (width + padding_px), padding_px + row * (height + padding_px)))
    if row_labels:
        draw = ImageDraw.Draw(canvas)
        for row, label in enumerate(row_labels[:rows]):
            draw.text((4, padding_px + row * (height + padding_px) + height // 2 - 5), label[:10], fill=(0, 0, 0))
    return canvas


SAMPLE_GRID_IMAGES = 64
SAMPLE_GRID_COLUMNS = 8


class FixedSamples:
    """The latents (and labels) of a sample grid: the same for every grid of a run, so grids compare.

    An AC-GAN grid has one row per type with the same 8 latents in every row.
    """

    def __init__(self, latent_size: int, classes: list[str] | None, seed: int):
        generator = torch.Generator().manual_seed(seed)
        if classes:
            self.latents = torch.randn(SAMPLE_GRID_COLUMNS, latent_size, generator=generator).repeat(len(classes), 1)
            self.labels = torch.arange(len(classes)).repeat_interleave(SAMPLE_GRID_COLUMNS)
            self.row_labels: list[str] | None = list(classes)
        else:
            self.latents = torch.randn(SAMPLE_GRID_IMAGES, latent_size, generator=generator)
            self.labels, self.row_labels = None, None

    @torch.no_grad()
    def grid(self, generator: torch.nn.Module, device: torch.device | str = "cpu") -> Image.Image:
        generator.eval()
        labels = None if self.labels is None else self.labels.to(device)
        images = generator(self.latents.to(device), labels)
        return grid_image(images, SAMPLE_GRID_COLUMNS, row_labels=self.row_labels)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def progress_gif(frames_png: list[bytes], frame_ms: int = 400) -> bytes:
    """An animated GIF of the sample grids in training order (the last frame held longer)."""
    if not frames_png:
        raise ValueError("no sample grids to animate")
    frames = [Image.open(io.BytesIO(data)).convert("RGB") for data in frames_png]
    durations = [frame_ms] * (len(frames) - 1) + [frame_ms * 5]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return buffer.getvalue()


def history_plot(history: list[dict], title: str) -> bytes:
    """PNG: D and G losses over images seen (top, with the adaptive augmentation probability p on its
    right axis when the run has one), FID and KID over images seen (bottom)."""
    import matplotlib

    matplotlib.use("Agg")  # no display here or on cluster nodes
    from matplotlib import pyplot

    figure, (losses, quality) = pyplot.subplots(2, 1, figsize=(8, 6), sharex=True)
    seen = [entry["images_seen"] for entry in history]
    for key, label in (("d_loss", "D loss"), ("g_loss", "G loss")):
        losses.plot(seen, [entry.get(key, float("nan")) for entry in history], label=label)
    losses.set_ylabel("loss")
    losses.legend(loc="upper left")
    if any("augment_probability" in entry for entry in history):
        probability = losses.twinx()
        probability.plot(seen, [entry.get("augment_probability", float("nan")) for entry in history], ":",
                         color="tab:green", label="augment p (ADA)")
        probability.set_ylim(0, 1)
        probability.set_ylabel("augment p")
        probability.legend(loc="upper right")
    losses.set_title(title)
    evaluated = [entry for entry in history if "fid" in entry]
    if evaluated:
        quality.plot([e["images_seen"] for e in evaluated], [e["fid"] for e in evaluated], "o-", label="FID")
        twin = quality.twinx()
        twin.plot([e["images_seen"] for e in evaluated], [e["kid"] for e in evaluated], "s--", color="tab:orange",
                  label="KID")
        twin.set_ylabel("KID")
        quality.legend(loc="upper right")
    quality.set_ylabel("FID (EMA generator)")
    quality.set_xlabel("images seen")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    pyplot.close(figure)
    return buffer.getvalue()
