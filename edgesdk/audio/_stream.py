"""Shared input handling of the streaming audio blocks (wake word, voice activity)."""

from __future__ import annotations

import numpy as np

from .._errors import InputError
from .._options import SessionOptions
from ._wav import Audio

STREAM_RATE = 16000


def stream_samples(chunk, block: str) -> np.ndarray:
    """A chunk of a 16 kHz stream as contiguous float32: an :class:`Audio` at 16 kHz or a 1-D float array."""
    if isinstance(chunk, Audio):
        if chunk.sample_rate != STREAM_RATE:
            # Resampling chunk by chunk would put filter edges at every chunk boundary.
            raise InputError(
                f"{block} streams 16000 Hz audio, got a chunk at {chunk.sample_rate} Hz; "
                "resample the whole stream once (Audio.to(16000)) or pass a whole clip to the clip method"
            )
        return chunk.samples
    if not isinstance(chunk, np.ndarray):
        raise InputError(f"{block} needs an edgesdk.audio.Audio or a numpy float32 array, got {type(chunk).__name__}")
    if chunk.ndim != 1:
        raise InputError(f"{block} needs mono audio (1-D samples), got shape {list(chunk.shape)}")
    if chunk.dtype.kind != "f":
        raise InputError(
            f"{block} needs float samples in [-1, 1] at 16000 Hz, got dtype {chunk.dtype} (wrap integer PCM in edgesdk.audio.Audio, which scales it)"
        )
    x = np.ascontiguousarray(chunk, dtype=np.float32)
    if not np.isfinite(x).all():
        raise InputError(f"{block}: audio samples contain NaN or infinity")
    return x


def clip_samples(audio, block: str) -> np.ndarray:
    """A whole clip (any rate) as 16 kHz float32 samples."""
    if not isinstance(audio, Audio):
        raise InputError(f"{block} needs an edgesdk.audio.Audio for a whole clip, got {type(audio).__name__}")
    return audio.to(STREAM_RATE).samples


def small_model_options(options: SessionOptions | None, overrides: dict) -> SessionOptions | None:
    """One thread unless the caller says otherwise: a 30 ms window is too little work to split, and
    the other cores are left to the pipeline's other stages."""
    if options is None and "threads" not in overrides:
        overrides["threads"] = 1
    return options
