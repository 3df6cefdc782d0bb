"""Resampling: both engines (soxr, numpy windowed-sinc) keep the length contract, agree with the ideal
band-limited result and with each other, do not depend on how the input is split, and stay in bounded
memory (tracemalloc, not timing)."""

import math
import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from edgesdk._errors import MissingDependencyError
from edgesdk.audio import _resample, read_wav, resample
from edgesdk.audio._resample import engine, resample_blocks

HAVE_SOXR = _resample._soxr() is not None
ENGINES = ["numpy", pytest.param("soxr", marks=pytest.mark.skipif(not HAVE_SOXR, reason="soxr not installed"))]
RATES = [
    (48000, 16000),
    (44100, 16000),
    (22050, 16000),
    (16000, 22050),
    (16000, 48000),
    (44100, 48000),
    (8000, 16000),
    (16000, 8000),
    (96000, 11025),
    (44101, 16000),
]
# Thresholds, with margin below what was measured away from the edges: each engine >= 95 dB from the ideal
# tones, numpy and soxr >= 93 dB from each other (44101 -> 16000 is the closest).
IDEAL_SNR_DB = 90
ENGINE_SNR_DB = 85


def tones(sr, n, rel_freqs, top):
    """A sum of tones at fractions of ``top`` Hz (the lower rate), so the signal is band-limited for both rates."""
    t = np.arange(n) / sr
    return sum(0.3 * np.sin(2 * np.pi * f * top * t + i) for i, f in enumerate(rel_freqs)).astype(np.float32)


def snr_db(ref, y):
    return 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((y.astype(np.float64) - ref) ** 2))


def run(x, sr_from, sr_to, eng, split=65536):
    return resample_blocks((x[i : i + split] for i in range(0, x.size, split)), x.size, sr_from, sr_to, engine_name=eng)


@pytest.mark.parametrize("sr_from,sr_to", RATES)
def test_engines_match_the_ideal_and_each_other(sr_from, sr_to):
    low = min(sr_from, sr_to)
    freqs = [0.03, 0.11, 0.29]  # up to 58% of the lower Nyquist: inside both engines' pass bands
    x = tones(sr_from, sr_from // 2, freqs, low)
    ideal = tones(sr_to, math.ceil(x.size * sr_to / sr_from), freqs, low)
    edge = slice(sr_to // 50, -(sr_to // 50))  # 20 ms: the tones start and stop abruptly, which no filter keeps
    got = {e: run(x, sr_from, sr_to, e) for e in (["numpy", "soxr"] if HAVE_SOXR else ["numpy"])}
    for e, y in got.items():
        assert y.size == ideal.size and y.dtype == np.float32
        assert snr_db(ideal[edge], y[edge]) > IDEAL_SNR_DB, e
    if HAVE_SOXR:
        assert snr_db(got["soxr"][edge], got["numpy"][edge]) > ENGINE_SNR_DB


@pytest.mark.parametrize("eng", ENGINES)
@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3000), rates=st.sampled_from(RATES + [(384000, 1000), (1000, 384000), (383999, 384000)]), split=st.integers(1, 700))
def test_length_is_ceil_of_n_times_ratio_and_splitting_does_not_matter(eng, n, rates, split):
    sr_from, sr_to = rates
    x = np.random.default_rng(n).uniform(-0.5, 0.5, n).astype(np.float32)
    whole = run(x, sr_from, sr_to, eng, split=n)
    assert whole.size == -(-n * sr_to // sr_from)
    np.testing.assert_allclose(run(x, sr_from, sr_to, eng, split=split), whole, rtol=0, atol=2e-6)


@pytest.mark.parametrize("eng", ENGINES)
def test_what_the_new_rate_cannot_hold_is_removed(monkeypatch, eng):
    monkeypatch.setenv("EDGESDK_RESAMPLER", eng)
    t = np.arange(22050) / 22050
    y = resample((0.5 * np.sin(2 * np.pi * 10000 * t)).astype(np.float32), 22050, 16000)  # above 8 kHz
    assert np.sqrt(np.mean(y[400:-400] ** 2)) < 1e-3


def test_engine_is_chosen_by_the_environment(monkeypatch, caplog):
    monkeypatch.setenv("EDGESDK_RESAMPLER", "numpy")
    assert engine() == "numpy"
    monkeypatch.setenv("EDGESDK_RESAMPLER", "fastest")
    assert engine() == ("soxr" if HAVE_SOXR else "numpy")
    assert "EDGESDK_RESAMPLER='fastest'" in caplog.text
    monkeypatch.setattr(_resample, "_soxr", lambda: None)
    monkeypatch.delenv("EDGESDK_RESAMPLER")
    assert engine() == "numpy"  # auto without soxr
    monkeypatch.setenv("EDGESDK_RESAMPLER", "soxr")
    with pytest.raises(MissingDependencyError, match="soxr"):
        engine()


def peak_mib(fn):
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("eng", ENGINES)
def test_resampling_memory_is_bounded(monkeypatch, eng):
    monkeypatch.setenv("EDGESDK_RESAMPLER", eng)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 48000 * 120).astype(np.float32)  # two minutes
    y, peak = peak_mib(lambda: resample(x, 48000, 16000))
    # before: ~2.2 GB for these two minutes; now the output (7.3 MiB) plus a few MiB of blocks
    assert peak < y.nbytes / 2**20 + 16


@pytest.mark.parametrize("eng", ENGINES)
def test_reading_at_a_rate_never_holds_the_original(tmp_path, monkeypatch, eng):
    monkeypatch.setenv("EDGESDK_RESAMPLER", eng)
    frames = 48000 * 120  # two minutes of 48 kHz stereo: 22 MiB on disk, 22 MiB as float32 mono
    p = tmp_path / "long.wav"
    with open(p, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 36 + frames * 4) + b"WAVE")
        f.write(b"fmt " + struct.pack("<IHHIIHH", 16, 1, 2, 48000, 48000 * 4, 4, 16))
        f.write(b"data" + struct.pack("<I", frames * 4))
        block = (np.random.default_rng(1).integers(-8000, 8000, (48000, 2))).astype("<i2").tobytes()
        for _ in range(120):
            f.write(block)
    a, peak = peak_mib(lambda: read_wav(p, 16000))
    assert a.samples.size == frames // 3
    assert peak < a.samples.nbytes / 2**20 + 16
