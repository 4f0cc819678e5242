"""Image decoding and the geometric augmentations of the grain maps (Pillow + NumPy).

Geometry is computed once per example and applied to every modality and to the mask, so they
stay aligned. A random scale followed by a crop is done in one step: the crop window is mapped
back to a box in the source image and only that box is resampled (`PIL.Image.resize(..., box=)`),
which gives the same pixels as scaling the whole image and cropping, at a fraction of the cost.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image

BILINEAR = Image.Resampling.BILINEAR
NEAREST = Image.Resampling.NEAREST

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def open_image(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def as_single_channel(im: Image.Image) -> Image.Image:
    """L / I;16 / I / F stay as they are; other modes keep their first channel."""
    if im.mode in ("L", "I;16", "I", "F"):
        return im
    if im.mode in ("I;16B", "I;16L", "I;16N"):
        return im.convert("I")
    if im.mode in ("LA", "RGB", "RGBA"):
        return im.getchannel(0)
    return im.convert("RGB").getchannel(0)


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Where the output crop comes from: `box` in source pixels, pasted at (top, left).

    `out` is the (height, width) of the output canvas, `paste` the (height, width) of the
    resampled box (smaller than `out` when the scaled image is smaller than the crop: the rest
    of the canvas is padding), `flip` mirrors the canvas horizontally.
    """

    box: tuple[float, float, float, float]
    paste: tuple[int, int]
    out: tuple[int, int]
    flip: bool = False


def full_geometry(src_hw: tuple[int, int], out_hw: tuple[int, int]) -> Geometry:
    """Resize the whole image to `out_hw` (no crop, no flip)."""
    h, w = src_hw
    return Geometry(box=(0.0, 0.0, float(w), float(h)), paste=tuple(out_hw), out=tuple(out_hw))


def scale_crop_geometry(
    src_hw: tuple[int, int],
    base_hw: tuple[int, int],
    crop_hw: tuple[int, int],
    rng: np.random.Generator,
    *,
    scale_range: tuple[float, float] = (1.0, 1.0),
    flip: bool = True,
) -> Geometry:
    """Resize to `base_hw`, scale by s ~ U(scale_range), random-crop `crop_hw`, maybe flip.

    Where the scaled image is smaller than the crop it sits at the top left of the canvas and the
    rest is padding (the caller's fill value: 0 for images, 255 for masks).
    """
    h, w = src_hw
    lo, hi = scale_range
    s = float(rng.uniform(lo, hi)) if hi > lo else float(lo)
    sh = max(int(round(base_hw[0] * s)), 1)
    sw = max(int(round(base_hw[1] * s)), 1)
    ch, cw = crop_hw
    y0 = int(rng.integers(0, sh - ch + 1)) if sh > ch else 0
    x0 = int(rng.integers(0, sw - cw + 1)) if sw > cw else 0
    vh, vw = min(ch, sh - y0), min(cw, sw - x0)
    ky, kx = sh / h, sw / w
    box = (x0 / kx, y0 / ky, (x0 + vw) / kx, (y0 + vh) / ky)
    do_flip = bool(flip and rng.random() < 0.5)
    return Geometry(box=box, paste=(vh, vw), out=(ch, cw), flip=do_flip)


def apply_geometry(
    im: Image.Image, geom: Geometry, *, resample, fill: float, dtype=None
) -> np.ndarray:
    """Resample `geom.box` of `im` into a canvas of `geom.out` filled with `fill`.

    Returns the pixels in the image's own dtype (uint8 for L/RGB, uint16 for I;16, ...) unless
    `dtype` is given. Resizing and flipping happen in Pillow, before any conversion.
    """
    vh, vw = geom.paste
    oh, ow = geom.out
    src_w, src_h = im.size
    box = geom.box
    identity = vh == src_h and vw == src_w and box == (0.0, 0.0, float(src_w), float(src_h))
    part = im if identity else im.resize((vw, vh), resample, box=box)
    padded = (vh, vw) != (oh, ow)
    if geom.flip and not padded:
        part = part.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    arr = np.asarray(part)
    if padded:
        canvas = np.full((oh, ow) + arr.shape[2:], fill, dtype=arr.dtype)
        canvas[:vh, :vw] = arr
        arr = canvas[:, ::-1] if geom.flip else canvas
    if dtype is not None:
        arr = arr.astype(dtype)
    return np.ascontiguousarray(arr)


class RgbNormalizer:
    """uint8 (H, W, 3) -> (x / 255 - mean) / std as float32, through a per-channel table."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        levels = np.arange(256, dtype=np.float64)[:, None] / 255.0
        self.table = ((levels - np.asarray(mean)) / np.asarray(std)).astype(np.float32)

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        out = np.empty(arr.shape, np.float32)
        for c in range(3):
            np.take(self.table[:, c], arr[..., c], out=out[..., c])
        return out


def pad_to(arr: np.ndarray, hw: tuple[int, int], fill) -> np.ndarray:
    h, w = arr.shape[:2]
    if (h, w) == tuple(hw):
        return arr
    if h > hw[0] or w > hw[1]:
        raise ValueError(f"array of size {(h, w)} does not fit in {tuple(hw)}")
    out = np.full(tuple(hw) + arr.shape[2:], fill, dtype=arr.dtype)
    out[:h, :w] = arr
    return out
