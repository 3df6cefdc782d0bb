import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from edgesdk._errors import InputError
from edgesdk.audio import Audio, read_wav, resample, write_wav


def tone(freq, sr, seconds=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("eng", ["numpy", "soxr"])
@pytest.mark.parametrize("sr_from,sr_to", [(22050, 16000), (16000, 22050), (48000, 16000), (16000, 8000)])
def test_resample_keeps_a_tone(monkeypatch, eng, sr_from, sr_to):
    if eng == "soxr":
        pytest.importorskip("soxr")
    monkeypatch.setenv("EDGESDK_RESAMPLER", eng)
    y = resample(tone(440, sr_from), sr_from, sr_to)
    assert y.size == int(np.ceil(int(sr_from * 0.5) * sr_to / sr_from))
    ref = tone(440, sr_to)[: y.size]
    edge = sr_to // 50
    assert np.abs(y[edge:-edge] - ref[edge:-edge]).max() < 1e-3


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(-32768, 32767), min_size=1, max_size=400), st.sampled_from([8000, 16000, 22050, 44100]))
def test_wav_round_trip(tmp_path_factory, values, sr):
    path = tmp_path_factory.mktemp("wav") / "x.wav"
    a = Audio(np.array(values, np.int16), sr)
    write_wav(path, a)
    b = read_wav(path)
    assert b.sample_rate == sr
    np.testing.assert_array_equal(b.to_int16(), a.to_int16())


def test_bad_audio_is_refused(tmp_path):
    with pytest.raises(InputError, match="1-D"):
        Audio(np.zeros((2, 3)), 16000)
    with pytest.raises(InputError, match="NaN"):
        Audio(np.array([0.0, np.nan]), 16000)
    with pytest.raises(InputError, match="sample_rate"):
        Audio(np.zeros(3), 0)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00not a wave")
    with pytest.raises(InputError, match="not a PCM WAV"):
        read_wav(bad)
    with pytest.raises(InputError, match="no such"):
        read_wav(tmp_path / "missing.wav")


def test_write_is_atomic_on_failure(tmp_path):
    path = tmp_path / "keep.wav"
    write_wav(path, Audio(np.zeros(10, np.float32), 16000))
    before = path.read_bytes()
    with pytest.raises(InputError):
        write_wav(path, "not audio")
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]
