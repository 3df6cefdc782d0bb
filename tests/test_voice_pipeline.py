"""The voice assistant pipeline end to end on real models: synthesized speech in, spoken answer out."""

import numpy as np
import pytest

import edgesdk
from edgesdk._errors import InputError, PipelineError

audio = pytest.importorskip("edgesdk.audio")
pytest.importorskip("piper")
pytest.importorskip("pymicro_features")
pytest.importorskip("edgesdk_ctranslate2", reason="pip install plugins/edgesdk-ctranslate2")
from edgesdk.audio import Audio  # noqa: E402
from edgesdk.pipeline import (
    AsrStage,
    LlmStage,
    Pipeline,
    TtsStage,
    VadStage,
    WakeWordStage,
    audio_frames,  # noqa: E402
    voice_assistant,
)

from conftest import hub_path  # noqa: E402


@pytest.fixture(scope="module")
def tts():
    hub_path("piper-joe-us")
    return audio.TextToSpeech(noise_scale=0, noise_w=0)


@pytest.fixture(scope="module")
def say(tts):
    def say(*parts):
        """Speech parts and pauses (floats, seconds) as one 16 kHz stream."""
        out = Audio.silence(0.4)
        for p in parts:
            out = out + (Audio.silence(p) if isinstance(p, float) else tts.synthesize(p).to(16000))
        return out + Audio.silence(1.0)

    return say


@pytest.fixture(scope="module")
def blocks(tts):
    llm = edgesdk.Session(hub_path("smollm2-135m"))
    return dict(
        wake=audio.WakeWordDetector("okay-nabu"), vad=audio.VoiceActivityDetector(), asr=audio.SpeechRecognizer(hub_path("whisper-tiny-en")), llm=llm, tts=tts
    )


def assistant(b, wake=True, max_tokens=24):
    stages = [WakeWordStage(b["wake"])] if wake else []
    stages += [
        VadStage(b["vad"], always_listen=not wake),
        AsrStage(b["asr"]),
        LlmStage(b["llm"], "Answer in one short sentence.", max_tokens=max_tokens),
        TtsStage(b["tts"]),
    ]
    return Pipeline(stages)


def kinds(events, kind):
    return [e for e in events if e.kind == kind]


def test_wake_word_then_question_gets_a_spoken_answer(blocks, say):
    pipe = assistant(blocks)
    events = list(pipe.run(audio_frames(say("Okay nabu.", 0.4, "What is the capital of France?"))))
    assert len(kinds(events, "wake")) == 1
    (transcript,) = kinds(events, "transcript")
    assert audio.word_error_rate("what is the capital of france", transcript.value) <= 0.2
    (answer,) = kinds(events, "answer")
    assert answer.value.strip()
    out = kinds(events, "output")
    assert out and all(isinstance(e.value, Audio) and e.turn == 1 for e in out)
    assert sum(e.value.duration for e in out) > 0.5
    heard = audio.SpeechRecognizer(hub_path("whisper-tiny-en")).transcribe(Audio(np.concatenate([e.value.samples for e in out]), out[0].value.sample_rate))
    assert audio.word_error_rate(answer.value, heard.text) <= 0.5  # what was spoken is the answer (tiny ASR, LLM text may be odd)
    rep = pipe.report()
    assert [s.name for s in rep.stages] == ["wake", "vad", "asr", "llm", "tts"]
    assert rep.stage("asr").placement == {"asr": "ctranslate2:cpu [cpu]"}
    assert rep.stage("wake").rtf < 1 and rep.stage("tts").audio_s > 0.5
    (turn,) = rep.turns
    assert turn.started_by == "speech_end" and not turn.cancelled and turn.first_output_s is not None
    assert turn.first_output_s <= turn.last_output_s


def test_speech_without_the_wake_word_is_ignored(blocks, say):
    events = list(assistant(blocks).run(audio_frames(say("What is the capital of France?"))))
    assert not kinds(events, "wake") and not kinds(events, "transcript") and not kinds(events, "output")


def test_always_listening_without_a_wake_word(blocks, say):
    events = list(assistant(blocks, wake=False).run(audio_frames(say("Hello, how are you?"))))
    assert len(kinds(events, "speech_end")) == 1
    assert "how are you" in kinds(events, "transcript")[0].value.lower()


def test_barge_in_cancels_the_first_answer_and_answers_the_second(blocks, say):
    stream = say("Okay nabu.", 0.4, "Tell me a long story about a dragon.", 0.5, "Okay nabu.", 0.4, "What is the weather like?")
    pipe = assistant(blocks, max_tokens=48)
    events = list(pipe.run(audio_frames(stream)))
    assert len(kinds(events, "wake")) == 2
    cancelled = {e.turn for e in kinds(events, "cancelled")}
    assert cancelled == {1}
    assert not [e for e in kinds(events, "output") if e.turn == 1]
    assert [e for e in kinds(events, "output") if e.turn == 2]
    assert "weather" in " ".join(e.value.lower() for e in kinds(events, "transcript") if e.turn == 2)
    turns = {t.turn: t for t in pipe.report().turns}
    assert turns[1].cancelled and not turns[2].cancelled


def test_voice_assistant_builder_places_and_budgets_every_stage():
    hub_path("whisper-tiny-en")
    with pytest.raises(PipelineError, match="(?s)stage 'llm'.*over the 43 MiB budget"):
        voice_assistant(memory_budget_mb=120, warmup=False)
    with pytest.raises(PipelineError, match="unknown stage"):
        voice_assistant(placement={"speaker": ("cpu",)}, warmup=False)
    with pytest.raises(PipelineError, match="backend_options names an unknown stage"):
        voice_assistant(backend_options={"speaker": {}}, warmup=False)
    with pytest.raises(PipelineError, match="stage 'asr'.*must map a backend name"):
        voice_assistant(backend_options={"asr": {"ctranslate2": 10}}, warmup=False)
    # A stage's backend options reach that stage's backend, unread by the pipeline: the plugin refuses a bad value.
    with pytest.raises(PipelineError, match="(?s)stage 'asr'.*window_s must be a number of seconds"):
        voice_assistant(wake_word=None, backend_options={"asr": {"ctranslate2": {"window_s": 4}}}, warmup=False)
    pipe = voice_assistant(
        placement={"wake": ("dsp", "cpu"), "llm": ("npu", "cpu")},
        warmup=False,
        options=edgesdk.SessionOptions(backend_options={"ctranslate2": {"beam_size": 2}}),
        backend_options={"asr": {"ctranslate2": {"window_s": 10}}},
    )
    try:
        assert set(pipe.placements) == {"wake", "vad", "asr", "llm", "tts"}
        assert pipe.placements["llm"]["llm"].device.id == "cpu:0"
        stages = {st.name: st for st in pipe.stages}
        # merged backend by backend over the pipeline's options, for the asr stage only
        assert stages["asr"].recognizer.session.options.backend_options["ctranslate2"] == {"beam_size": 2, "window_s": 10}
        assert stages["tts"].tts.session.options.backend_options["ctranslate2"] == {"beam_size": 2}
    finally:
        pipe.close()


def test_bad_stream_values_are_named():
    with pytest.raises(InputError, match="Audio"):
        list(audio_frames(np.zeros(10)))
    with pytest.raises(InputError, match="frame_ms"):
        list(audio_frames(Audio.silence(0.1), frame_ms=0))
    pipe = Pipeline([VadStage(audio.VoiceActivityDetector())])
    with pytest.raises(PipelineError, match="stage 'vad'.*Frame"):
        list(pipe.run([np.zeros(320, np.float32)]))
