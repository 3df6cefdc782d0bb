"""Speech recognition: any model whose backend takes ``{"audio": float32[n]}`` and returns ``{"text": [str]}``.

The default is Whisper tiny.en through the ``edgesdk-ctranslate2`` plugin. A runner that also offers
``transcribe(samples)`` (segments with times, language) is used for the richer result.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import attrs
import numpy as np

from .. import hub
from .._errors import InputError, MissingDependencyError, ModelFormatError
from .._options import SessionOptions
from .._block import SessionBlock
from .._session import Session
from ._wav import Audio

__all__ = ["SpeechRecognizer", "Transcript", "TranscriptSegment"]

log = logging.getLogger(__name__)

_DEFAULT_RATE = 16000


@attrs.frozen
class TranscriptSegment:
    """A stretch of recognised speech; times in seconds from the start of the audio."""

    start: float
    end: float
    text: str


@attrs.frozen
class Transcript:
    """What was said: ``duration`` is the audio's length, ``compute_seconds`` the time recognition took."""

    text: str
    segments: tuple[TranscriptSegment, ...]
    language: str | None
    language_probability: float | None
    duration: float
    compute_seconds: float

    @property
    def real_time_factor(self) -> float:
        """Compute time per second of audio (< 1 is faster than real time)."""
        return self.compute_seconds / self.duration if self.duration else float("inf")


class SpeechRecognizer(SessionBlock):
    """Transcribe :class:`Audio` (any sample rate: resampled to the model's) with a model run by :attr:`session`."""

    def __init__(self, model="hub:whisper-tiny-en", options: SessionOptions | None = None, **session_overrides):
        try:
            self.session = Session(model, options, **session_overrides)
        except ModelFormatError as exc:
            p = Path(hub.resolve(model)) if isinstance(model, str) else Path(model)
            if p.is_dir() and (p / "model.bin").is_file():
                raise MissingDependencyError(
                    "SpeechRecognizer on a CTranslate2 model directory", "edgesdk-ctranslate2", "no installed backend plugin reads it"
                ) from exc
            raise
        runner = self.session.runner
        specs = self.session.inputs
        if len(specs) != 1 or specs[0].dtype.kind != "f" or (specs[0].shape is not None and len(specs[0].shape) != 1):
            raise ModelFormatError(
                self.session.model.path, f"not a speech recognizer: expects inputs {[str(s) for s in specs]}, want one 1-D float audio input"
            )
        if "text" not in {o.name for o in self.session.outputs}:
            raise ModelFormatError(self.session.model.path, "not a speech recognizer: it has no 'text' output")
        self._input = specs[0].name
        self.sample_rate = int(getattr(runner, "sample_rate", _DEFAULT_RATE))
        self._rich = getattr(runner, "transcribe", None)

    @property
    def placement(self):
        return self.session.placement

    def transcribe(self, audio: Audio) -> Transcript:
        if not isinstance(audio, Audio):
            raise InputError(f"transcribe needs an edgesdk.audio.Audio, got {type(audio).__name__} (wrap samples with Audio(samples, sample_rate))")
        if audio.samples.size == 0:
            raise InputError("audio is empty")
        x = audio.to(self.sample_rate).samples
        t0 = time.perf_counter()
        if self._rich is not None:
            r = self._rich(x)
            segments = tuple(TranscriptSegment(float(s.start), float(s.end), str(s.text)) for s in r.segments)
            text, language, prob = str(r.text), r.language, r.language_probability
        else:
            out = self.session.run({self._input: x}, ["text"])["text"]
            text = str(np.asarray(out).reshape(-1)[0]).strip()
            segments = (TranscriptSegment(0.0, audio.duration, text),) if text else ()
            language = prob = None
        return Transcript(text, segments, language, None if prob is None else float(prob), audio.duration, time.perf_counter() - t0)

    @property
    def sessions(self) -> dict:
        return {"asr": self.session}

    def __repr__(self) -> str:
        return f"<SpeechRecognizer {Path(self.session.model.path).name!r} on {self.session.placement.device.id}>"
