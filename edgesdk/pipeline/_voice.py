"""The voice assistant's stages: wake word -> VAD -> ASR -> LLM -> TTS, each on its own placement.

Audio enters as :class:`Frame` s of one 16 kHz stream. The wake word stage listens to every frame;
the VAD stage listens only after a wake word (unless ``always_listen``) and closes an utterance into
a new turn; ASR turns it into text; the LLM streams its answer; TTS speaks each sentence as soon as
it is complete, so the first audio leaves long before the answer is finished. A wake word heard
while an answer is still in flight is a barge-in: the answer is cancelled and the new request runs.
"""

from __future__ import annotations

import re
import time
from typing import Any, Iterator, Mapping

import attrs
import numpy as np

from .._errors import InputError, PipelineError
from .._options import SessionOptions
from ..audio import Audio
from ._core import Pipeline, Stage, StageContext, StageSpec

__all__ = ["Frame", "audio_frames", "WakeWordStage", "VadStage", "AsrStage", "LlmStage", "TtsStage", "voice_assistant"]

RATE = 16000


@attrs.frozen(eq=False)
class Frame:
    """A slice of the input stream: samples at 16 kHz, where it starts in the stream (seconds), when
    it arrived (``time.perf_counter()``), and the wake word detected in it, if any."""

    samples: np.ndarray
    start: float
    arrived: float
    wake: Any = None

    @property
    def end(self) -> float:
        return self.start + self.samples.size / RATE


def audio_frames(audio: Audio, frame_ms: int = 20, realtime: bool = False) -> Iterator[Frame]:
    """Cut ``audio`` into frames as a microphone would deliver them; ``realtime`` paces them at the
    speed of speech (so latencies measured downstream are those a user would feel)."""
    if not isinstance(audio, Audio):
        raise InputError(f"audio_frames needs an edgesdk.audio.Audio, got {type(audio).__name__}")
    if isinstance(frame_ms, bool) or not isinstance(frame_ms, int) or not 1 <= frame_ms <= 1000:
        raise InputError(f"frame_ms must be an int in [1, 1000], got {frame_ms!r}")
    x = audio.to(RATE).samples
    step = RATE * frame_ms // 1000
    t0 = time.perf_counter()
    for i in range(0, x.size, step):
        start = i / RATE
        if realtime:
            delay = t0 + start + step / RATE - time.perf_counter()  # a frame exists only once its last sample was spoken
            if delay > 0:
                time.sleep(delay)
        yield Frame(x[i : i + step], start, time.perf_counter())


def _frame(value) -> Frame:
    if not isinstance(value, Frame):
        raise InputError(f"voice stages take edgesdk.pipeline.Frame values (see audio_frames), got {type(value).__name__}")
    return value


class WakeWordStage(Stage):
    """Always-on: marks frames in which the wake word completes; one heard mid-answer barges in.

    ``barge_in=False`` keeps the turns in flight: a command-and-control app must carry out a command
    even when the next wake word comes before it is done, where an assistant stops talking.
    """

    name = "wake"

    def __init__(self, detector, barge_in: bool = True):
        self.detector = detector
        self.barge_in = barge_in

    @property
    def sessions(self):
        return {"wakeword": self.detector.session}

    def warmup(self) -> None:
        self.detector.process(np.zeros(RATE, np.float32))
        self.detector.reset()

    def process(self, value, ctx: StageContext):
        f = _frame(value)
        ctx.add_audio(f.samples.size / RATE)
        hits = self.detector.process(f.samples)
        if hits:
            ctx.emit("wake", hits[-1])
            if self.barge_in:
                ctx.barge_in()
            f = attrs.evolve(f, wake=hits[-1])
        yield f


class VadStage(Stage):
    """Collects one utterance after the wake word (or any speech when ``always_listen``) into a turn.

    Keeps ``preroll_s`` of audio before the detected start (the VAD confirms speech late) and gives
    up after ``listen_timeout_s`` without speech. The utterance's turn starts at the *end of speech*:
    the event's time is when the last speech sample arrived, so turn latencies are what a user feels.
    """

    name = "vad"

    def __init__(self, vad, always_listen: bool = False, listen_timeout_s: float = 5.0, preroll_s: float = 0.3, max_utterance_s: float = 20.0):
        self.vad = vad
        self.always_listen = always_listen
        self.listen_timeout_s = listen_timeout_s
        self.preroll = int(preroll_s * RATE)
        self.max_utterance = int(max_utterance_s * RATE)
        self._reset(armed=always_listen, at=0.0)

    @property
    def sessions(self):
        return {"vad": self.vad.session}

    def warmup(self) -> None:
        self.vad.process(np.zeros(RATE // 2, np.float32))
        self.vad.reset()

    def _reset(self, armed: bool, at: float) -> None:
        self._armed = armed
        self._armed_at = at
        self._buf: list[np.ndarray] = []  # samples since arming (bounded by preroll until speech starts)
        self._buf_start = at
        self._arrivals: list[tuple[float, float]] = []  # (stream end time, arrival) of buffered frames
        self._speaking = False
        self.vad.reset()

    def process(self, value, ctx: StageContext):
        f = _frame(value)
        if f.wake is not None:
            self._reset(armed=True, at=f.end)  # the command follows the wake word: listen from here
            return
        if not self._armed:
            return
        ctx.add_audio(f.samples.size / RATE)
        self._buf.append(f.samples)
        self._arrivals.append((f.end, f.arrived))
        for ev in self.vad.process(f.samples):
            if ev.kind == "start":
                self._speaking = True
                ctx.emit("speech_start", self._armed_at + ev.time)
            else:
                yield from self._utterance(ctx, self._armed_at + ev.time)
                self._reset(armed=self.always_listen, at=f.end)
                return
        n = sum(b.size for b in self._buf)
        if not self._speaking:
            while n - self._buf[0].size >= self.preroll and len(self._buf) > 1:  # keep only the pre-roll
                n -= self._buf[0].size
                self._buf_start += self._buf.pop(0).size / RATE
                self._arrivals.pop(0)
            if not self.always_listen and f.end - self._armed_at > self.listen_timeout_s:
                ctx.emit("listen_timeout", f.end)
                self._reset(armed=False, at=f.end)
        elif n > self.max_utterance:
            yield from self._utterance(ctx, f.end)
            self._reset(armed=self.always_listen, at=f.end)

    def flush(self, ctx: StageContext):
        if self._armed and self._speaking:
            ends = [e for e in self.vad.flush() if e.kind == "end"]
            if ends:
                yield from self._utterance(ctx, self._armed_at + ends[-1].time)

    def _utterance(self, ctx: StageContext, end: float):
        audio = np.concatenate(self._buf) if self._buf else np.zeros(0, np.float32)
        cut = int(round((end - self._buf_start) * RATE))
        audio = audio[: max(0, cut)]
        arrived = next((a for e, a in self._arrivals if e >= end), self._arrivals[-1][1] if self._arrivals else time.perf_counter())
        ctx.new_turn()
        ctx.emit("speech_end", end, at=arrived)
        if audio.size:
            yield Audio(audio, RATE)


class AsrStage(Stage):
    """Utterance audio -> text (skips empty transcripts)."""

    name = "asr"

    def __init__(self, recognizer):
        self.recognizer = recognizer

    @property
    def sessions(self):
        return {"asr": self.recognizer.session}

    def warmup(self) -> None:
        noise = np.random.default_rng(0).normal(0, 0.01, RATE).astype(np.float32)
        self.recognizer.transcribe(Audio(noise, RATE))

    def process(self, value, ctx: StageContext):
        if not isinstance(value, Audio):
            raise InputError(f"AsrStage takes edgesdk.audio.Audio, got {type(value).__name__}")
        ctx.add_audio(value.duration)
        text = self.recognizer.transcribe(value).text.strip()
        ctx.emit("transcript", text)
        if text:
            yield text


class LlmStage(Stage):
    """Text -> streamed answer pieces, from a generative Session or a hybrid Orchestrator.

    With a hybrid Orchestrator the request may go to the cloud when its policy allows; the route
    taken is published as a ``route`` event. ``private`` requests never leave the device.
    """

    name = "llm"

    def __init__(self, llm, system_prompt: str | None = None, max_tokens: int = 96, private: bool = False):
        self.llm = llm
        self.system_prompt = system_prompt
        self.max_tokens = max_tokens
        self.private = private

    @property
    def sessions(self):
        return {"llm": self.llm.device if self._hybrid else self.llm}  # an Orchestrator's device session

    def warmup(self) -> None:
        session = self.sessions["llm"]
        for _ in session.generate_stream("Hi", max_tokens=2):
            pass
        reset = getattr(session.runner, "reset", None)
        if reset is not None:
            reset()  # start the first real turn from an empty KV cache

    @property
    def _hybrid(self) -> bool:
        return hasattr(self.llm, "policy")

    def process(self, value, ctx: StageContext):
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"LlmStage takes a non-empty str, got {value!r}")
        if self._hybrid:
            # The route is decided on the whole device answer (its confidence), so a weak answer
            # is never spoken before the better one replaces it: no token streaming here.
            answer = self.llm.generate(value, private=self.private, max_tokens=self.max_tokens)
            ctx.emit("route", answer.route)
            ctx.emit("answer", answer.text)
            yield answer.text
            return
        chat = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + [{"role": "user", "content": value}]
        stream = self.llm.generate_stream(chat, max_tokens=self.max_tokens)
        pieces = []
        try:
            for piece in stream:
                pieces.append(piece)
                ctx.emit("token", piece)
                yield piece
        finally:
            stream.close()  # cancellation (barge-in) closes us here, and we stop the decoder
        ctx.emit("answer", "".join(pieces))


_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")
_CLAUSE_END = re.compile(r"(?<=[.!?;:,])\s+|\n+")


class TtsStage(Stage):
    """Answer pieces -> spoken audio, one chunk per sentence as soon as the sentence is complete.

    The first chunk of a turn may end at a comma: the user hears the answer start sooner, and the
    rest is synthesized while that clause plays.
    """

    name = "tts"

    def __init__(self, tts, min_chars: int = 12):
        self.tts = tts
        self.min_chars = min_chars
        self._text: dict[int, str] = {}
        self._spoken: set[int] = set()

    @property
    def sessions(self):
        return {"tts": self.tts.session}

    def warmup(self) -> None:
        self.tts.synthesize("Hello.")

    def process(self, value, ctx: StageContext):
        if not isinstance(value, str):
            raise InputError(f"TtsStage takes str pieces, got {type(value).__name__}")
        for t in [t for t in self._text if t < ctx.turn]:  # left by turns cancelled mid-sentence
            del self._text[t]
        text = self._text.get(ctx.turn, "") + value
        parts = (_SENTENCE_END if ctx.turn in self._spoken else _CLAUSE_END).split(text)
        done, rest = parts[:-1], parts[-1]
        ready = ""
        for p in done:  # very short "sentences" (a list bullet, "Sure.") are spoken with the next one
            ready = f"{ready} {p}".strip()
            if len(ready) >= self.min_chars:
                yield from self._speak(ready, ctx)
                ready = ""
        self._text[ctx.turn] = f"{ready} {rest}".strip() if ready else rest

    def end_turn(self, ctx: StageContext):
        rest = self._text.pop(ctx.turn, "").strip()
        if any(c.isalnum() for c in rest):
            yield from self._speak(rest, ctx)
        self._spoken.discard(ctx.turn)

    def _speak(self, sentence: str, ctx: StageContext):
        self._spoken.add(ctx.turn)
        for chunk in self.tts.stream(sentence):
            ctx.add_audio(chunk.duration)
            yield chunk


_STAGES = ("wake", "vad", "asr", "llm", "tts")


def _with_backend_options(options: SessionOptions, extra) -> SessionOptions:
    """``options`` with one stage's backend options merged in, backend by backend (the stage's win)."""
    if not extra:
        return options
    merged = {k: dict(v) for k, v in options.backend_options.items()}
    for backend, opts in extra.items():
        merged[backend] = {**merged.get(backend, {}), **opts}
    return attrs.evolve(options, backend_options=merged)


def voice_assistant(
    *,
    wake_word: str | None = "okay-nabu",
    llm="hub:smollm2-135m",
    asr="hub:whisper-tiny-en",
    voice="hub:piper-joe-us",
    options: SessionOptions | None = None,
    memory_budget_mb: float | None = None,
    system_prompt: str | None = "You are a helpful voice assistant. Answer in one or two short sentences.",
    max_tokens: int = 64,
    orchestrator=None,
    placement: dict[str, tuple[str, ...]] | None = None,
    backend_options: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    warmup: bool = True,
) -> Pipeline:
    """The offline assistant: wake word -> VAD -> ASR -> LLM -> TTS.

    ``wake_word=None`` listens to all speech. ``placement`` maps a stage name ("wake", "vad", "asr",
    "llm", "tts") to its ``prefer`` order (e.g. the wake word on a DSP, the LLM on the NPU).
    ``backend_options`` maps a stage name to backend options for that stage only, keyed by backend
    name as in ``SessionOptions.backend_options`` and merged over ``options.backend_options`` (the
    stage's win), e.g. ``{"asr": {"ctranslate2": {"window_s": 10}}}``; each backend documents its own.
    ``orchestrator``: a callable ``Session -> hybrid Orchestrator`` to let answers escalate to a cloud.
    ``warmup`` runs every model once before returning, so the first request is not the slow one.
    """
    from ..audio import SpeechRecognizer, TextToSpeech, VoiceActivityDetector, WakeWordDetector

    placement = dict(placement or {})
    unknown = set(placement) - set(_STAGES)
    if unknown:
        raise PipelineError(sorted(unknown)[0], f"placement names an unknown stage (stages: {', '.join(_STAGES)})")
    if backend_options is not None and not isinstance(backend_options, Mapping):
        raise TypeError(f"backend_options must map a stage name to that stage's backend options, got {type(backend_options).__name__}")
    stage_options = dict(backend_options or {})
    unknown = set(stage_options) - set(_STAGES)
    if unknown:
        raise PipelineError(sorted(unknown)[0], f"backend_options names an unknown stage (stages: {', '.join(_STAGES)})")
    for name, per_backend in stage_options.items():
        if not isinstance(per_backend, Mapping) or not all(isinstance(b, str) and isinstance(v, Mapping) for b, v in per_backend.items()):
            raise PipelineError(name, f"backend_options for stage {name!r} must map a backend name to a dict of its options, got {per_backend!r}")

    def stage(name, build):
        """The stage's recipe: ``build`` gets the pipeline's options for it with the stage's backend options merged in."""
        return StageSpec(name, lambda o: build(_with_backend_options(o, stage_options.get(name))), prefer=placement.get(name))

    def llm_stage(opts):
        from .._session import Session

        session = Session(llm, opts)
        return LlmStage(orchestrator(session) if orchestrator else session, system_prompt, max_tokens)

    specs = []
    if wake_word is not None:
        specs.append(stage("wake", lambda o: WakeWordStage(WakeWordDetector(wake_word, o))))
    specs += [
        stage("vad", lambda o: VadStage(VoiceActivityDetector(options=o), always_listen=wake_word is None)),
        stage("asr", lambda o: AsrStage(SpeechRecognizer(asr, o))),
        stage("llm", llm_stage),
        stage("tts", lambda o: TtsStage(TextToSpeech(voice, o))),
    ]
    pipe = Pipeline(specs, options=options, memory_budget_mb=memory_budget_mb)
    if warmup:
        pipe.warmup()
    return pipe
