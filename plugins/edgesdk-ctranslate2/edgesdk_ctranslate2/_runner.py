"""The Runner: a Whisper model loaded on one device, with edgesdk's tensor API and a richer transcribe()."""

from __future__ import annotations

import logging
import time

import attrs
import numpy as np

from edgesdk.backend import NodePlacement, Runner, TensorSpec
from edgesdk.errors import BackendError, InputError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Whisper's feature extractor assumes 16 kHz

_OPTION_KEYS = {"beam_size", "language", "compute_type", "window_s"}
#: Audio up to (window_s - 0.5) s long is encoded in a window_s-second window instead of Whisper's 30 s:
#: ~4x less encoder work for a spoken command, the same words on tests/test_speech.py's round-trip set.
DEFAULT_WINDOW_S = 10


@attrs.frozen
class Word:
    start: float
    end: float
    word: str
    probability: float


@attrs.frozen
class Segment:
    """A stretch of speech: times in seconds from the start of the audio."""

    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    words: tuple[Word, ...] = ()


@attrs.frozen
class Transcription:
    text: str
    segments: tuple[Segment, ...]
    language: str
    language_probability: float
    duration: float  # seconds of audio
    compute_seconds: float


class WhisperRunner(Runner):
    """``run({"audio": float32[n] at 16 kHz})`` -> ``{"text": str array of one element}``.

    :meth:`transcribe` returns the segments, their timings and the language as well. Safe to call
    from several threads: ctranslate2 queues concurrent requests on the model's workers.
    """

    inputs = (TensorSpec("audio", ("samples",), np.float32),)
    outputs = (TensorSpec("text", (1,), np.str_),)
    sample_rate = SAMPLE_RATE

    def __init__(self, model, device, *, compute_type: str, device_kind: str, device_index: int, threads: int, backend_options):
        unknown = set(backend_options) - _OPTION_KEYS
        if unknown:
            raise BackendError(f"ctranslate2: unknown backend option(s) {sorted(unknown)}; known: {sorted(_OPTION_KEYS)}")
        self._beam_size = int(backend_options.get("beam_size", 5))
        if self._beam_size < 1:
            raise BackendError(f"ctranslate2: beam_size must be >= 1, got {self._beam_size}")
        self._language = backend_options.get("language")
        window = backend_options.get("window_s", DEFAULT_WINDOW_S)  # None: faster-whisper's 30 s path for all audio
        if window is not None and (isinstance(window, bool) or not isinstance(window, (int, float)) or not 10 <= window <= 30):
            raise BackendError(f"ctranslate2: window_s must be a number of seconds in [10, 30] (shorter windows make Whisper repeat itself), got {window!r}")
        self._window = window
        compute_type = backend_options.get("compute_type", compute_type)
        from faster_whisper import WhisperModel

        try:
            # A directory path: faster-whisper loads it as is and never contacts a model hub.
            self._model = WhisperModel(
                model.path, device=device_kind, device_index=device_index, compute_type=compute_type, cpu_threads=threads, local_files_only=True
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise BackendError(f"ctranslate2 cannot load {model.path} on {device.id}: {exc}") from exc
        self.compute_type = self._model.model.compute_type
        self.multilingual = self._model.model.is_multilingual
        self.nodes = (NodePlacement(f"whisper[{self.compute_type}]", "WhisperSpec", device.id),)
        log.info("loaded %s on %s (compute type %s)", model.path, device.id, self.compute_type)

    def transcribe(self, audio, *, language: str | None = None, beam_size: int | None = None, word_timestamps: bool = False) -> Transcription:
        """Transcribe mono float32 samples at 16 kHz; ``language`` is detected when None (multilingual models)."""
        x = np.asarray(audio)
        if x.ndim != 1 or x.dtype.kind != "f":
            raise InputError(f"audio must be 1-D float samples at {SAMPLE_RATE} Hz, got {x.dtype}{list(x.shape)}")
        if x.size == 0:
            raise InputError("audio is empty")
        x = np.ascontiguousarray(x, np.float32)
        if not np.isfinite(x).all():
            raise InputError("audio contains NaN or infinity")
        language = language or self._language or (None if self.multilingual else "en")
        t0 = time.perf_counter()
        if self._window and x.size <= (self._window - 0.5) * SAMPLE_RATE and language and not word_timestamps:
            return self._short(x, language, beam_size or self._beam_size, t0)
        try:
            segments, info = self._model.transcribe(x, language=language, beam_size=beam_size or self._beam_size, word_timestamps=word_timestamps)
            segs = tuple(
                Segment(
                    float(s.start),
                    float(s.end),
                    s.text.strip(),
                    float(s.avg_logprob),
                    float(s.no_speech_prob),
                    tuple(Word(float(w.start), float(w.end), w.word.strip(), float(w.probability)) for w in (s.words or ())),
                )
                for s in segments  # a generator: decoding happens while iterating
            )
        except (RuntimeError, ValueError) as exc:
            raise BackendError(f"ctranslate2 Whisper failed: {exc}") from exc
        return Transcription(
            text=" ".join(s.text for s in segs if s.text),
            segments=segs,
            language=info.language,
            language_probability=float(info.language_probability),
            duration=x.size / SAMPLE_RATE,
            compute_seconds=time.perf_counter() - t0,
        )

    def _short(self, x: np.ndarray, language: str, beam_size: int, t0: float) -> Transcription:
        """One short utterance through a shortened encoder window (``window_s`` instead of 30 s).

        The encoder's cost is proportional to its input frames and faster-whisper always pads to
        30 s, so a 2 s voice command pays for 30 s of encoding. Whisper decodes correctly from a
        shorter window when the speech fits in it (the "audio context" trick); the output length
        is capped so that a window that is too short cannot loop.
        """
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer

        frames = int(self._window * 100)  # 10 ms hop
        padded = np.zeros(int(self._window * SAMPLE_RATE), np.float32)
        padded[: x.size] = x
        feats = self._model.feature_extractor(padded)[:, :frames]
        tok = Tokenizer(self._model.hf_tokenizer, self.multilingual, task="transcribe", language=language)
        prompt = self._model.get_prompt(tok, [], without_timestamps=True)
        duration = x.size / SAMPLE_RATE
        try:
            res = self._model.model.generate(
                ctranslate2.StorageView.from_array(np.ascontiguousarray(feats[None], np.float32)),
                [prompt],
                beam_size=beam_size,
                max_length=len(prompt) + int(8 * duration) + 16,
                suppress_blank=True,
                suppress_tokens=[-1],
                return_scores=True,
                return_no_speech_prob=True,
            )[0]
        except (RuntimeError, ValueError) as exc:
            raise BackendError(f"ctranslate2 Whisper failed: {exc}") from exc
        ids = [t for t in res.sequences_ids[0] if t < tok.eot]
        text = tok.decode(ids).strip()
        seg = Segment(0.0, duration, text, float(res.scores[0]) if res.scores else 0.0, float(res.no_speech_prob))
        return Transcription(
            text=text, segments=(seg,) if text else (), language=language, language_probability=1.0, duration=duration, compute_seconds=time.perf_counter() - t0
        )

    def run(self, feeds, output_names=None):
        result = self.transcribe(feeds["audio"])
        return {"text": np.array([result.text])}

    def close(self) -> None:
        # ctranslate2 frees the weights when the model object goes; drop it now rather than at GC.
        self._model = None
