"""Wake word (microWakeWord TFLite) and voice activity (silero VAD ONNX) blocks on real models.

Speech comes from edgesdk's own TextToSpeech (piper voice, deterministic settings), so the
detections below are the real models' answers to real synthesized speech.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgesdk
from edgesdk import hub
from edgesdk.errors import InputError, ModelLoadError, UnsupportedModelError

pytest.importorskip("pymicro_features", reason="the audio extra is not installed: pip install -e '.[audio]'")
from edgesdk.audio import Audio, Detection, SpeechSegment, VadEvent, VoiceActivityDetector, WakeWordDetector  # noqa: E402


def _need(name):
    try:
        hub.path(name)
    except hub.HubError as exc:
        pytest.skip(str(exc))


SR = 16000


@pytest.fixture(scope="module")
def tts():
    _need("piper-joe-us")
    pytest.importorskip("piper", reason="piper-tts (audio extra) is not installed")
    from edgesdk.audio import TextToSpeech

    return TextToSpeech(noise_scale=0, noise_w=0)


@pytest.fixture(scope="module")
def speech(tts):
    """Synthesized phrases at 16 kHz, each made once per module."""
    cache = {}

    def get(text):
        if text not in cache:
            cache[text] = tts.synthesize(text).to(SR)
        return cache[text]

    return get


@pytest.fixture(scope="module")
def nabu():
    _need("wakeword-okay-nabu")
    return WakeWordDetector("okay-nabu")


@pytest.fixture(scope="module")
def jarvis():
    _need("wakeword-hey-jarvis")
    return WakeWordDetector("hey-jarvis")


@pytest.fixture(scope="module")
def vad():
    _need("silero-vad")
    return VoiceActivityDetector()


def _silence(s):
    return Audio.silence(s, SR)


def _white(seconds, amp=0.1, seed=0):
    rng = np.random.default_rng(seed)
    return Audio((rng.standard_normal(int(seconds * SR)) * amp).astype(np.float32).clip(-1, 1), SR)


def _pink(seconds, amp=0.1, seed=1):
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    spec[1:] /= np.sqrt(f[1:])  # 1/f power
    spec[0] = 0
    x = np.fft.irfft(spec, n)
    return Audio((x / np.abs(x).max() * amp).astype(np.float32), SR)


def _split(x: np.ndarray, cuts):
    edges = [0, *sorted(set(int(c) for c in cuts if 0 < c < x.size)), x.size]
    return [x[a:b] for a, b in zip(edges, edges[1:])]


# ---------------------------------------------------------------------------- wake word


@pytest.mark.parametrize("text", ["okay nabu", "Okay, Nabu."])
def test_okay_nabu_is_detected_in_synthesized_speech(nabu, speech, text):
    said = speech(text)
    clip = _silence(0.5) + said + _silence(0.5)
    dets = nabu.detect(clip)
    assert len(dets) == 1, (dets, nabu.max_probability)
    d = dets[0]
    assert isinstance(d, Detection) and d.wake_word == "Okay Nabu"
    assert d.probability > nabu.probability_cutoff == 0.85  # cutoff read from the model's JSON
    # fired while or shortly after the phrase was spoken, never before it began
    assert 0.5 < d.time <= 0.5 + said.duration + 0.5
    assert nabu.session.placement.backend == "tflite"


def test_wake_word_after_other_speech_fires_once_at_the_right_time(nabu, speech):
    other, said = speech("hello there, how are you"), speech("okay nabu")
    clip = _silence(0.3) + other + _silence(0.7) + said + _silence(0.5)
    dets = nabu.detect(clip)
    begin = 0.3 + other.duration + 0.7
    assert [round(d.time, 2) for d in dets] and len(dets) == 1, dets
    assert begin < dets[0].time <= begin + said.duration + 0.5


@pytest.mark.parametrize("noise", [_white(4.0), _pink(4.0)], ids=["white", "pink"])
def test_no_wake_word_in_noise(nabu, noise):
    assert nabu.detect(noise) == []
    assert nabu.max_probability < 0.5


def test_no_wake_word_in_other_speech(nabu, speech):
    assert nabu.detect(_silence(0.3) + speech("hello there, how are you") + _silence(0.5)) == []
    assert nabu.max_probability < 0.5


def test_other_wake_word_model_does_not_fire_on_okay_nabu(jarvis, speech):
    assert jarvis.detect(_silence(0.5) + speech("okay nabu") + _silence(0.5)) == []
    assert jarvis.max_probability < 0.5
    # and it does hear its own phrase, so the silence above means something
    assert [d.wake_word for d in jarvis.detect(_silence(0.5) + speech("hey jarvis") + _silence(0.5))] == ["Hey Jarvis"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(0, 40_000), max_size=25))
def test_wake_word_chunking_does_not_change_detections(nabu, speech, cuts):
    x = (_silence(0.4) + speech("okay nabu") + _silence(0.6)).samples
    whole = nabu.detect(Audio(x, SR))
    peak = nabu.max_probability
    nabu.reset()
    streamed = [d for piece in _split(x, cuts) for d in nabu.process(piece)]
    assert streamed == whole and nabu.max_probability == peak
    assert len(whole) == 1


def test_wake_word_reset_restores_model_state(nabu, speech):
    x = (_silence(0.3) + speech("okay nabu") + _silence(0.3)).samples
    first = nabu.detect(Audio(x, SR))
    nabu.process(speech("hello there, how are you").samples)  # leave state behind
    nabu.reset()
    assert nabu.process(x) == first


def test_tflite_runner_reset_state_and_quantization():
    _need("wakeword-okay-nabu")
    s = edgesdk.Session("hub:wakeword-okay-nabu")
    inp, out = s.inputs[0], s.outputs[0]
    assert set(s.runner.quantization) == {inp.name, out.name}
    rng = np.random.default_rng(3)
    frames = rng.integers(-128, 0, (40, *inp.shape), dtype=np.int8)

    def scores():
        return np.array([s.run({inp.name: f})[out.name].item() for f in frames])

    fresh = scores()
    s.runner.reset_state()
    assert np.array_equal(scores(), fresh)


@pytest.mark.parametrize("block, clip_method", [("nabu", "detect"), ("vad", "segments")])
def test_stream_bad_input(request, block, clip_method):
    det = request.getfixturevalue(block)
    with pytest.raises(InputError, match="dtype int16"):
        det.process(np.zeros(1600, np.int16))
    with pytest.raises(InputError, match="1-D"):
        det.process(np.zeros((2, 1600), np.float32))
    with pytest.raises(InputError, match="NaN"):
        det.process(np.array([0.0, np.nan], np.float32))
    with pytest.raises(InputError, match="infinity"):
        det.process(np.array([0.0, np.inf], np.float32))
    with pytest.raises(InputError, match="22050 Hz"):
        det.process(Audio(np.zeros(2205, np.float32), 22050))
    with pytest.raises(InputError, match="whole clip"):
        getattr(det, clip_method)(np.zeros(1600, np.float32))
    det.reset()
    assert det.process(np.zeros(0, np.float32)) == []


def test_wake_word_bad_model(tmp_path):
    with pytest.raises(hub.HubError, match="okay-nabu"):
        WakeWordDetector("okay-nabuu")
    with pytest.raises(hub.HubError):
        WakeWordDetector("silero-vad")  # a hub model, but not a wake word
    with pytest.raises(ModelLoadError, match="no such"):
        WakeWordDetector(str(tmp_path / "missing.tflite"))
    with pytest.raises(InputError, match="probability_cutoff"):
        WakeWordDetector("okay-nabu", probability_cutoff=1.5)
    try:
        face = hub.path("face-detection")
    except hub.HubError:
        return
    with pytest.raises(ModelLoadError, match="JSON"):
        WakeWordDetector(str(face))
    with pytest.raises(UnsupportedModelError, match="microWakeWord"):
        WakeWordDetector(str(face), probability_cutoff=0.5, sliding_window=3)


# ---------------------------------------------------------------------------- voice activity


@pytest.fixture(scope="module")
def two_utterances(speech):
    """silence + speech + silence + speech + silence, and where each utterance was placed."""
    a, b = speech("hello there, how are you"), speech("what is the weather today")
    clip = _silence(1.0) + a + _silence(1.5) + b + _silence(1.0)
    return clip, [(1.0, 1.0 + a.duration), (2.5 + a.duration, 2.5 + a.duration + b.duration)]


def test_vad_segments_two_utterances(vad, two_utterances):
    clip, placed = two_utterances
    segs = vad.segments(clip)
    assert all(isinstance(s, SpeechSegment) for s in segs)
    assert len(segs) == 2, segs
    for seg, (start, end) in zip(segs, placed):
        assert abs(seg.start - start) < 0.3 and abs(seg.end - end) < 0.3, (segs, placed)
    assert vad.session.placement.device.kind == "cpu"


@pytest.mark.parametrize("noise", [_white(4.0), _pink(4.0), _silence(2.0)], ids=["white", "pink", "silence"])
def test_vad_no_segments_without_speech(vad, noise):
    assert vad.segments(noise) == []


def test_vad_resamples_a_clip(vad, two_utterances):
    clip, _ = two_utterances
    a = vad.segments(clip)
    b = vad.segments(clip.to(22050))
    assert len(a) == len(b) == 2
    assert all(abs(x.start - y.start) < 0.05 and abs(x.end - y.end) < 0.05 for x, y in zip(a, b))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(0, 120_000), max_size=30))
def test_vad_chunking_does_not_change_events(vad, two_utterances, cuts):
    clip, _ = two_utterances
    vad.reset()
    events = [e for piece in _split(clip.samples, cuts) for e in vad.process(piece)] + vad.flush()
    assert all(isinstance(e, VadEvent) for e in events)
    assert [e.kind for e in events] == ["start", "end", "start", "end"]
    segs = vad.segments(clip)
    assert [(e.time) for e in events] == [t for s in segs for t in (s.start, s.end)]


def test_vad_events_stream_in_order_and_reset(vad, two_utterances):
    clip, _ = two_utterances
    x = clip.samples
    vad.reset()
    seen = []
    for i in range(0, x.size, 4000):  # 250 ms chunks, as a microphone would deliver them
        for e in vad.process(x[i : i + 4000]):
            assert e.time <= (i + 4000) / SR  # an event never lies in the future of the audio fed
            seen.append(e)
    seen += vad.flush()
    vad.process(_white(1.0).samples)
    vad.reset()
    again = vad.process(x) + vad.flush()
    assert seen == again and len(again) == 4


def test_vad_bad_settings_and_model(vad):
    with pytest.raises(InputError):
        VoiceActivityDetector(threshold=0)
    with pytest.raises(InputError, match="min_silence_ms"):
        VoiceActivityDetector(min_silence_ms=-1)
    with pytest.raises(hub.HubError):
        VoiceActivityDetector("hub:silero-vadd")
    with pytest.raises(UnsupportedModelError, match="silero"):
        VoiceActivityDetector("hub:wakeword-okay-nabu")  # a model, but not silero
