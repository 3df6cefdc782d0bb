"""PCM audio as float32 in [-1, 1], mono: WAV read/write and band-limited resampling."""

from __future__ import annotations

import io
import os
import wave
from pathlib import Path

import attrs
import numpy as np

from .._errors import InputError
from .._io import atomic_write_bytes
from ._resample import output_length, resample_blocks
from ._wavfile import WavReader

__all__ = ["Audio", "read_wav", "write_wav", "resample"]

_MIN_RATE, _MAX_RATE = 1000, 384_000
_SLICE = 1 << 16  # samples per step through an in-memory array: scratch memory stays O(slice), not O(n)


def _samples(value) -> np.ndarray:
    a = np.asarray(value)
    if a.ndim != 1:
        raise InputError(f"audio samples must be 1-D (mono), got shape {list(a.shape)}")
    if a.dtype.kind not in "fiu":
        raise InputError(f"audio samples must be numeric, got dtype {a.dtype}")
    if a.dtype.kind == "i":  # full-scale integer PCM, the WAV convention: -2**(b-1) maps to -1.0
        a = a.astype(np.float32) / float(-np.iinfo(a.dtype).min)
    elif a.dtype.kind == "u":
        a = a.astype(np.float32) / float(2 ** (8 * a.dtype.itemsize - 1)) - 1.0
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not all(np.isfinite(a[i : i + _SLICE]).all() for i in range(0, a.size, _SLICE)):
        raise InputError("audio samples contain NaN or infinity")
    return a


def _rate(instance, attribute, value):
    _check_rate(value)


def _check_rate(value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not _MIN_RATE <= value <= _MAX_RATE:
        raise InputError(f"sample_rate must be an integer in [{_MIN_RATE}, {_MAX_RATE}] Hz, got {value!r}")


@attrs.frozen(eq=False)
class Audio:
    """Mono audio: float32 samples in [-1, 1] at ``sample_rate`` Hz."""

    samples: np.ndarray = attrs.field(converter=_samples, repr=lambda a: f"<{a.size} samples>")
    sample_rate: int = attrs.field(validator=_rate)

    @property
    def duration(self) -> float:
        return self.samples.size / self.sample_rate

    def to(self, sample_rate: int) -> "Audio":
        """This audio at another sample rate (itself when the rate already matches)."""
        if sample_rate == self.sample_rate:
            return self
        return Audio(resample(self.samples, self.sample_rate, sample_rate), sample_rate)

    def to_int16(self) -> np.ndarray:
        return np.clip(np.round(self.samples * 32768.0), -32768, 32767).astype(np.int16)

    def __add__(self, other: "Audio") -> "Audio":
        if not isinstance(other, Audio):
            return NotImplemented
        other = other.to(self.sample_rate)
        return Audio(np.concatenate([self.samples, other.samples]), self.sample_rate)

    @classmethod
    def silence(cls, seconds: float, sample_rate: int = 16000) -> "Audio":
        return cls(np.zeros(int(round(seconds * sample_rate)), np.float32), sample_rate)


def read_wav(path, sample_rate: int | None = None) -> Audio:
    """Read an uncompressed WAV file: 8-bit unsigned, 16/24/32-bit PCM or 32/64-bit float, plain or
    WAVE_FORMAT_EXTENSIBLE, any channel count (channels are averaged).

    With ``sample_rate`` the samples are resampled while they are read, so a long recording never sits in
    memory at its original rate: ``read_wav(p, 16000)`` equals ``read_wav(p).to(16000)``.
    """
    p = Path(os.fspath(path))
    if sample_rate is not None:
        _check_rate(sample_rate)
    with WavReader(p) as wav:
        if not _MIN_RATE <= wav.sample_rate <= _MAX_RATE:
            raise InputError(f"{p}: sample rate {wav.sample_rate} Hz is outside [{_MIN_RATE}, {_MAX_RATE}] Hz")
        if wav.frames == 0:
            raise InputError(f"{p}: WAV file has no samples")
        rate = sample_rate or wav.sample_rate
        out = _empty(output_length(wav.frames, wav.sample_rate, rate), p)
        if rate == wav.sample_rate:
            _fill(out, wav.blocks())
        else:
            resample_blocks(wav.blocks(), wav.frames, wav.sample_rate, rate, out)
    return Audio(out, rate)


def _empty(n: int, p: Path) -> np.ndarray:
    try:
        return np.empty(n, np.float32)
    except MemoryError:  # a huge but well-formed file: say so instead of numpy's allocator message
        raise InputError(f"{p}: {n} samples need {n * 4 / 2**30:.1f} GiB, more memory than is free") from None


def _fill(out: np.ndarray, blocks) -> None:
    at = 0
    for b in blocks:
        out[at : at + b.size] = b
        at += b.size


def write_wav(path, audio: Audio) -> None:
    """Write 16-bit mono PCM atomically (a crash leaves the old file or none, never half a file)."""
    if not isinstance(audio, Audio):
        raise InputError(f"write_wav needs an Audio, got {type(audio).__name__}")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(audio.sample_rate)
        w.writeframes(audio.to_int16().tobytes())
    atomic_write_bytes(path, buf.getvalue())


def resample(samples, sr_from: int, sr_to: int) -> np.ndarray:
    """Band-limited resampling by the ratio ``sr_to / sr_from``: ``ceil(n * sr_to / sr_from)`` samples.

    soxr does it when installed, else a numpy windowed-sinc (``EDGESDK_RESAMPLER`` overrides); either
    way the memory beyond the result is a few MiB, however long the input.
    """
    x = _samples(samples)
    for r in (sr_from, sr_to):
        if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
            raise InputError(f"sample rates must be positive integers, got {sr_from!r} -> {sr_to!r}")
    if sr_from == sr_to or x.size == 0:
        return x.copy()
    return resample_blocks(_slices(x), x.size, sr_from, sr_to)


def _slices(x: np.ndarray):
    for i in range(0, x.size, _SLICE):
        yield x[i : i + _SLICE]
