"""Vision building blocks: printed-text OCR (PP-OCR) and face detection (BlazeFace). Each runs its
models through an :class:`edgesdk.Session` (``block.sessions``), so placement is reported like any
other model's; pre- and post-processing is numpy (Pillow only to read image files).

Submodules are imported on first use: importing ``edgesdk.vision`` loads no model runtime.
"""

from __future__ import annotations

from .._lazy import lazy_getattr
from ._image import as_rgb, load_image, resize

# name -> private module that defines it
_LAZY = {
    "TextRecognizer": "._ocr",
    "TextLine": "._ocr",
    "label_components": "._ocr",
    "FaceDetector": "._faces",
    "Face": "._faces",
}

__all__ = ["as_rgb", "load_image", "resize", *_LAZY]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
