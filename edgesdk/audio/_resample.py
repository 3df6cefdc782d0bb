"""Band-limited resampling of a stream of float32 blocks in bounded memory: soxr when installed, else numpy.

Both engines see the signal as continuing with zeros on either side, so a block boundary never shows in the
output. The length contract (``ceil(n * sr_to / sr_from)`` samples, output sample ``k`` at input position
``k * sr_from / sr_to``) is applied once, in :func:`resample_blocks`, whatever the engine.

``EDGESDK_RESAMPLER=auto|soxr|numpy`` picks the engine (``auto``: soxr when importable); :func:`engine`
reports the choice.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from functools import lru_cache

import numpy as np

from .. import _env
from .._errors import MissingDependencyError

__all__ = ["engine", "output_length", "resample_blocks"]

log = logging.getLogger(__name__)

_ENV = "EDGESDK_RESAMPLER"
_HALF_TAPS = 16  # zero crossings each side of the windowed-sinc kernel: ~-90 dB stop band with the Kaiser window below
_KAISER_BETA = 9.0
_BANK_FLOATS = 1 << 20  # taps table budget (4 MiB): odd rate pairs share quantized phases instead of growing it
_BLOCK_FLOATS = 1 << 18  # per-step gather budget (1 MiB) of the numpy engine


@lru_cache(maxsize=1)
def _soxr():
    try:
        import soxr
    except ImportError:
        return None
    return soxr


def engine() -> str:
    """The resampler in use: ``"soxr"`` or ``"numpy"`` (``EDGESDK_RESAMPLER`` read on every call)."""
    want = _env.get(_ENV)  # a typo is a warning, then auto: it must not make audio fail
    if want == "numpy":
        return "numpy"
    if _soxr() is None:
        if want == "soxr":
            raise MissingDependencyError(f"{_ENV}=soxr", "soxr")
        return "numpy"
    return "soxr"


def _ratio(sr_from: int, sr_to: int) -> tuple[int, int]:
    g = math.gcd(sr_from, sr_to)
    return sr_to // g, sr_from // g


def output_length(n: int, sr_from: int, sr_to: int) -> int:
    """``ceil(n * sr_to / sr_from)``: every output sample whose position lies inside the input."""
    up, down = _ratio(sr_from, sr_to)
    return -(-n * up // down)


def resample_blocks(
    blocks: Iterable[np.ndarray], n: int, sr_from: int, sr_to: int, out: np.ndarray | None = None, engine_name: str | None = None
) -> np.ndarray:
    """Resample ``n`` float32 samples arriving as ``blocks`` into ``out`` (allocated when None).

    Peak memory is the output plus a few MiB, however long the input.
    """
    n_out = output_length(n, sr_from, sr_to)
    if out is None:
        out = np.empty(n_out, np.float32)
    stream = _STREAMS[engine_name or engine()](sr_from, sr_to)
    filled = 0

    def put(y: np.ndarray) -> None:
        nonlocal filled
        take = min(y.size, n_out - filled)
        out[filled : filled + take] = y[:take]
        filled += take

    for block in blocks:
        put(stream.process(block))
    # soxr stops at round(n * ratio) samples; zeros past the end (what both engines assume) supply the rest.
    up, down = _ratio(sr_from, sr_to)
    put(stream.process(np.zeros(-(-down // up) + 1, np.float32)))
    put(stream.flush())
    assert filled == n_out, (filled, n_out)
    return out


class _SoxrStream:
    def __init__(self, sr_from: int, sr_to: int):
        self._s = _soxr().ResampleStream(sr_from, sr_to, 1, dtype="float32", quality="HQ")

    def process(self, x: np.ndarray) -> np.ndarray:
        return self._s.resample_chunk(np.ascontiguousarray(x, np.float32))

    def flush(self) -> np.ndarray:
        return self._s.resample_chunk(np.zeros(0, np.float32), last=True)


def _kaiser(t: np.ndarray, half: float) -> np.ndarray:
    """The Kaiser window evaluated at any real offset ``t`` (np.kaiser only samples integer points)."""
    r = np.clip(1.0 - (t / half) ** 2, 0.0, None)
    return np.i0(_KAISER_BETA * np.sqrt(r)) / np.i0(_KAISER_BETA)


@lru_cache(maxsize=4)
def _filter_bank(up: int, down: int) -> np.ndarray:
    """Row p: the low-pass taps at input offsets ``-half+1 .. half`` for an output ``p / rows`` past an input sample.

    There are ``up`` fractional positions; when a table that fine would pass the budget the positions are
    rounded to ``rows`` evenly spaced ones. The timing error, under ``1 / (2 * rows)`` input samples,
    stays below -85 dB of the passband at any ratio, because fewer rows are only needed for longer kernels.
    """
    cutoff = min(1.0, up / down)  # relative to the input Nyquist: anti-aliasing when downsampling
    half = math.ceil(_HALF_TAPS / cutoff)
    rows = max(1, min(up, _BANK_FLOATS // (2 * half)))
    t = np.arange(-half + 1, half + 1)[None, :] - (np.arange(rows) / rows)[:, None]
    taps = cutoff * np.sinc(cutoff * t) * _kaiser(t, half)
    taps /= taps.sum(axis=1, keepdims=True)  # unity DC gain per phase
    return taps.astype(np.float32)


class _SincStream:
    """Polyphase windowed-sinc resampling; holds one kernel length of input between calls."""

    def __init__(self, sr_from: int, sr_to: int):
        self._up, self._down = _ratio(sr_from, sr_to)
        self._bank = _filter_bank(self._up, self._down)
        self._taps = self._bank.shape[1]
        self._half = self._taps // 2
        self._step = max(1, _BLOCK_FLOATS // self._taps)
        self._buf = np.zeros(self._half, np.float32)  # the zeros before the signal
        self._buf_start = -self._half  # input index of _buf[0]
        self._n_in = 0
        self._k = 0  # next output index

    def process(self, x: np.ndarray) -> np.ndarray:
        self._append(x)
        self._n_in += x.size
        # An output needs input up to base + half, plus one when its phase rounds up to the next sample.
        return self._emit(self._outputs_before(self._n_in - self._half - 1))

    def flush(self) -> np.ndarray:
        self._append(np.zeros(self._half + 1, np.float32))
        return self._emit(self._outputs_before(self._n_in))

    def _outputs_before(self, m: int) -> int:
        """How many outputs sit at input positions below ``m``."""
        return max(0, -(-m * self._up // self._down))

    def _append(self, x: np.ndarray) -> None:
        # drop input that no remaining output's window reaches
        first_needed = self._k * self._down // self._up - self._half + 1
        drop = max(0, first_needed - self._buf_start)
        self._buf = np.concatenate([self._buf[drop:], np.asarray(x, np.float32)])
        self._buf_start += drop

    def _emit(self, k_end: int) -> np.ndarray:
        parts = [self._compute(k, min(k + self._step, k_end)) for k in range(self._k, k_end, self._step)]
        self._k = max(self._k, k_end)
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def _compute(self, k0: int, k1: int) -> np.ndarray:
        rows = self._bank.shape[0]
        num = np.arange(k0, k1, dtype=np.int64) * self._down
        base = num // self._up
        # the nearest table row (exact when rows == up); rounding past the last row is phase 0 one sample on
        phase = ((num % self._up) * rows + self._up // 2) // self._up
        carry = phase == rows
        base += carry
        phase[carry] = 0
        starts = base - self._half + 1 - self._buf_start
        windows = np.lib.stride_tricks.sliding_window_view(self._buf, self._taps)[starts]
        if rows == 1:
            return windows @ self._bank[0]
        return np.einsum("ij,ij->i", windows, self._bank[phase])


_STREAMS = {"soxr": _SoxrStream, "numpy": _SincStream}
