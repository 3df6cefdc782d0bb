"""Images in, images out: validation, file loading and an antialiased resize, all in numpy.

The vision blocks take ``uint8`` RGB arrays (H, W, 3); grey (H, W) and RGBA (H, W, 4) are accepted
and converted. Only loading a file needs Pillow, so numpy-only apps never import it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._errors import ImageLoadError, ImageNotFoundError, InputDtypeError, InputShapeError, MissingDependencyError

__all__ = ["as_rgb", "load_image", "resize"]


def load_image(path) -> np.ndarray:
    """Decode an image file (PNG, JPEG, ... through Pillow) to a ``uint8`` RGB array."""
    p = Path(os.fspath(path)).expanduser()
    if not p.is_file():
        raise ImageNotFoundError(p, "no such file" if not p.exists() else "not a regular file")
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise MissingDependencyError("loading image files", "pillow", str(exc)) from exc
    try:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))
    except UnidentifiedImageError as exc:
        raise ImageLoadError(p, "not an image format Pillow can decode") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data
        raise ImageLoadError(p, f"{type(exc).__name__}: {exc}") from exc


def as_rgb(image, name: str = "image") -> np.ndarray:
    """``image`` (an array, a path or a Pillow image) as a C-contiguous ``uint8`` (H, W, 3) array."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if not isinstance(image, np.ndarray) and hasattr(image, "convert") and hasattr(image, "mode"):
        image = np.asarray(image.convert("RGB"))  # a Pillow image
    if not isinstance(image, np.ndarray):
        raise InputDtypeError(f"{name} must be a numpy array, a path or a Pillow image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        # Float images have no agreed range (0..1 or 0..255); guessing would silently skew the models.
        raise InputDtypeError(f"{name} must be uint8 (0..255), got {image.dtype}; e.g. (x * 255).round().astype(np.uint8) for 0..1 floats")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise InputShapeError(f"{name} must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {image.shape}")
    elif image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise InputShapeError(f"{name} must be at least 2x2 pixels, got shape {image.shape}")
    return np.ascontiguousarray(image)


def _taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights of a triangle filter widened by the scale when shrinking (antialiasing)."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centers = (np.arange(n_out) + 0.5) * scale - 0.5
    k = 2 * int(np.ceil(support)) + 1
    idx = np.floor(centers - support).astype(np.int64)[:, None] + 1 + np.arange(k)[None, :]
    w = np.maximum(0.0, 1.0 - np.abs(idx - centers[:, None]) / support)
    idx = np.clip(idx, 0, n_in - 1)  # edge pixels repeat, as with clamp-to-edge sampling
    w /= w.sum(axis=1, keepdims=True)
    return idx, w.astype(np.float32)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an (H, W) or (H, W, C) array to (height, width), float32 out; bilinear when enlarging,
    area-weighted when shrinking so thin strokes (text) and small faces do not alias away."""
    if height < 1 or width < 1:
        raise InputShapeError(f"cannot resize to {height}x{width}")
    img = np.asarray(image, dtype=np.float32)
    if img.shape[:2] == (height, width):
        return img.copy()
    iy, wy = _taps(img.shape[0], height)
    ix, wx = _taps(img.shape[1], width)
    extra = (None,) * (img.ndim - 1)
    rows = sum(wy[(slice(None), j) + extra] * img[iy[:, j]] for j in range(iy.shape[1]))
    extra = (None,) * (img.ndim - 2)
    return sum(wx[(None, slice(None), j) + extra] * rows[:, ix[:, j]] for j in range(ix.shape[1]))
