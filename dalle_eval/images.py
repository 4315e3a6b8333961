"""Image encode/decode shared by the layers (core): the image file types we read, PIL <-> uint8 arrays, PNG
bytes, and the one center-crop + bicubic resize (FID reference images and --image completion inputs)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# Every image file type read anywhere (webdataset keys, image folders, evaluation sets), lower case, no dot.
IMAGE_EXTS = ("png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff")


def is_image_file(path) -> bool:
    """True for a path whose suffix is one of IMAGE_EXTS (any case)."""
    return path.suffix.lower().lstrip(".") in IMAGE_EXTS


def image_to_array(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def center_square_resize(img: Image.Image, size: int) -> Image.Image:
    """Center-crop to the shorter side (offsets rounded down), then PIL bicubic (antialiased) to size x size;
    an image already size x size is returned as is."""
    if img.size == (size, size):
        return img
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    return img.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
