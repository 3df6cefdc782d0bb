"""PCM audio as float32 in [-1, 1], mono: WAV read/write and band-limited resampling."""

from __future__ import annotations

import io
import math
import os
import wave
from functools import lru_cache
from pathlib import Path

import attrs
import numpy as np

from .._errors import InputError
from .._io import atomic_write_bytes

__all__ = ["Audio", "read_wav", "write_wav", "resample"]


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
    if not np.isfinite(a).all():
        raise InputError("audio samples contain NaN or infinity")
    return a


def _rate(instance, attribute, value):
    if not isinstance(value, int) or isinstance(value, bool) or not 1000 <= value <= 384_000:
        raise InputError(f"sample_rate must be an integer in [1000, 384000] Hz, got {value!r}")


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


def read_wav(path) -> Audio:
    """Read a PCM WAV file (8/16/24/32-bit integer, any channel count: channels are averaged)."""
    p = Path(os.fspath(path))
    try:
        with wave.open(str(p), "rb") as w:
            width, channels, rate, n = w.getsampwidth(), w.getnchannels(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except FileNotFoundError:
        raise InputError(f"{p}: no such WAV file") from None
    except (wave.Error, EOFError) as exc:
        raise InputError(f"{p}: not a PCM WAV file ({exc})") from None
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        x = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8).astype(np.float32) / 8388608.0
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / 2147483648.0
    else:
        raise InputError(f"{p}: unsupported sample width {width} bytes")
    if channels > 1:
        x = x[: x.size // channels * channels].reshape(-1, channels).mean(axis=1)
    if x.size == 0:
        raise InputError(f"{p}: WAV file has no samples")
    return Audio(x, rate)


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


_HALF_TAPS = 16  # zero crossings each side of the windowed-sinc kernel: ~-90 dB stop band with the Kaiser window below


@lru_cache(maxsize=16)
def _filter_bank(up: int, down: int) -> tuple[np.ndarray, np.ndarray]:
    """For output phase p (0 <= p < up): the input offsets and taps of a Kaiser-windowed sinc low-pass."""
    cutoff = min(1.0, up / down)  # relative to the input Nyquist: anti-aliasing when downsampling
    half = int(math.ceil(_HALF_TAPS / cutoff))
    offs = np.arange(-half + 1, half + 1)
    phases = np.arange(up) * down % up / up  # fractional position of each output phase between input samples
    t = offs[None, :] - phases[:, None]
    taps = cutoff * np.sinc(cutoff * t) * np.kaiser(2 * half + 1, 9.0)[np.clip(np.round(t + half).astype(int), 0, 2 * half)]
    taps /= taps.sum(axis=1, keepdims=True)  # unity DC gain per phase
    return offs, taps.astype(np.float32)


def resample(samples, sr_from: int, sr_to: int) -> np.ndarray:
    """Band-limited resampling by the rational ratio ``sr_to / sr_from`` (windowed sinc, polyphase)."""
    x = _samples(samples)
    for r in (sr_from, sr_to):
        if not isinstance(r, int) or r <= 0:
            raise InputError(f"sample rates must be positive integers, got {sr_from!r} -> {sr_to!r}")
    if sr_from == sr_to or x.size == 0:
        return x.copy()
    g = math.gcd(sr_from, sr_to)
    up, down = sr_to // g, sr_from // g
    offs, taps = _filter_bank(up, down)
    n_out = int(math.ceil(x.size * up / down))
    k = np.arange(n_out)
    base = k * down // up  # input sample at or before each output sample
    pad = offs.size
    xp = np.concatenate([np.zeros(pad, np.float32), x, np.zeros(pad, np.float32)])
    out = np.empty(n_out, np.float32)
    phase = k % up
    for p in range(up):  # one gather + dot per phase keeps memory at O(n_out * taps / up)
        sel = np.nonzero(phase == p)[0]
        if sel.size:
            idx = base[sel, None] + offs[None, :] + pad
            out[sel] = xp[idx] @ taps[p]
    return out
