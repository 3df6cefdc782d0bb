"""Vision building blocks: printed-text OCR (PP-OCR) and face detection (BlazeFace). Each runs its
models through an :class:`edgesdk.Session` (``block.sessions``), so placement is reported like any
other model's; pre- and post-processing is numpy (Pillow only to read image files).

Submodules are imported on first use: importing ``edgesdk.vision`` loads no model runtime.
"""

from __future__ import annotations

import importlib

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


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgesdk.vision' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
