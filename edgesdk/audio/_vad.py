"""Voice activity detection with silero VAD (ONNX) through :class:`edgesdk.Session`.

The model scores 512-sample windows of 16 kHz audio, each given together with the 64 samples
before it (silero's own wrapper does this; without that context the model under-detects), and
carries a recurrent state from window to window. Scores become speech segments with silero's
hysteresis: speech starts at a window scoring ``>= threshold``, and ends once windows have scored
below ``threshold - 0.15`` for ``min_silence_ms``; segments of ``min_speech_ms`` or less are dropped
and the rest padded by ``speech_pad_ms``.
"""

from __future__ import annotations

import logging
from typing import Literal

import attrs
import numpy as np

from .._errors import InputError, UnsupportedModelError
from .._options import SessionOptions
from .._session import Session
from ._stream import STREAM_RATE, clip_samples, small_model_options, stream_samples

__all__ = ["VoiceActivityDetector", "SpeechSegment", "VadEvent"]

log = logging.getLogger("edgesdk.audio.vad")

_WINDOW = 512
_CONTEXT = 64


@attrs.frozen
class SpeechSegment:
    """Speech from ``start`` to ``end``, in seconds from the start of the clip (or stream)."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@attrs.frozen
class VadEvent:
    """Speech began (``kind="start"``) or ended (``"end"``) at ``time`` seconds into the stream.

    Events are reported once they are certain, so ``time`` lies in the past of the audio fed so far:
    a start once the speech has outlasted ``min_speech_ms``, an end once ``min_silence_ms`` of
    silence followed it. Times include ``speech_pad_ms``.
    """

    kind: Literal["start", "end"]
    time: float


class VoiceActivityDetector:
    """Streaming voice activity detector over silero VAD.

    ``model`` is a hub name or a path to a silero VAD v5/v6 ONNX file; ``options`` /
    ``session_overrides`` go to the :class:`~edgesdk.Session` (:attr:`session`; one CPU thread
    unless set). :meth:`process` takes consecutive chunks of one 16 kHz stream of any size (a
    partial window waits for the next chunk, so the chunking never changes the result) and returns
    :class:`VadEvent` s; :meth:`flush` ends the stream; :meth:`segments` runs a whole clip.
    """

    def __init__(
        self,
        model="hub:silero-vad",
        options: SessionOptions | None = None,
        threshold: float = 0.5,
        min_speech_ms: float = 250,
        min_silence_ms: float = 300,
        speech_pad_ms: float = 30,
        **session_overrides,
    ):
        if not 0.0 < float(threshold) < 1.0:
            raise InputError(f"threshold must be in (0, 1), got {threshold!r}")
        for name, v in (("min_speech_ms", min_speech_ms), ("min_silence_ms", min_silence_ms), ("speech_pad_ms", speech_pad_ms)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 3_600_000:
                raise InputError(f"{name} must be a non-negative number of milliseconds, got {v!r}")
        self.threshold = float(threshold)
        self.neg_threshold = max(self.threshold - 0.15, 0.01)
        self.min_silence_ms = float(min_silence_ms)  # how long after speech ends the "end" event comes
        self._min_speech = STREAM_RATE * min_speech_ms / 1000
        self._min_silence = STREAM_RATE * min_silence_ms / 1000
        self._pad = int(STREAM_RATE * speech_pad_ms / 1000)
        self.session = Session(model, small_model_options(options, session_overrides), **session_overrides)
        self._check_signature()
        self.reset()

    def _check_signature(self) -> None:
        names = {i.name: i for i in self.session.inputs}
        outs = [o.name for o in self.session.outputs]
        state = names.get("state")
        if (
            set(names) != {"input", "state", "sr"}
            or len(outs) != 2
            or state is None
            or state.shape is None
            or len(state.shape) != 3
            or state.shape[0] != 2
            or not isinstance(state.shape[2], int)
        ):
            raise UnsupportedModelError(
                self.session.model.path,
                f"not a silero VAD v5/v6 model: expected inputs input, state [2, batch, N], sr and two outputs; got {[str(i) for i in self.session.inputs]}",
            )
        self._prob_name, self._state_name = outs
        self._state_shape = (2, 1, state.shape[2])
        self._sr = np.array(STREAM_RATE, dtype=names["sr"].dtype)

    def reset(self) -> None:
        """Forget the stream: model state, context, buffered samples and the speech state machine."""
        self._state = np.zeros(self._state_shape, np.float32)
        self._context = np.zeros(_CONTEXT, np.float32)
        self._buf = np.zeros(0, np.float32)
        self._window_start = 0  # stream sample at which the next window begins
        self._triggered = False
        self._confirmed = False
        self._start = 0
        self._temp_end: int | None = None
        self._last_end = 0  # padded end of the last reported segment, in samples
        self.last_probability = 0.0

    def _score(self, window: np.ndarray) -> float:
        x = np.concatenate([self._context, window])[None]
        out = self.session.run({"input": x, "state": self._state, "sr": self._sr})
        self._state = out[self._state_name]
        self._context = window[-_CONTEXT:]
        self.last_probability = p = float(out[self._prob_name].reshape(-1)[0])
        return p

    def _step(self, p: float, events: list[VadEvent]) -> None:
        """Silero's segmentation rule for one window starting at ``self._window_start``."""
        cur = self._window_start
        if p >= self.threshold:
            self._temp_end = None
            if not self._triggered:
                self._triggered, self._confirmed, self._start = True, False, cur
                return
        elif p < self.neg_threshold and self._triggered:
            if self._temp_end is None:
                self._temp_end = cur
            if cur - self._temp_end >= self._min_silence:
                self._close(self._temp_end, events)
                return
        if self._triggered and not self._confirmed and self._temp_end is None and cur + _WINDOW - self._start > self._min_speech:
            # The segment's end can only come after this window, so it is long enough to keep.
            self._confirmed = True
            events.append(VadEvent("start", max(self._last_end, self._start - self._pad) / STREAM_RATE))

    def _close(self, end: int, events: list[VadEvent], stream_end: int | None = None) -> None:
        if self._confirmed:
            padded = end + self._pad if stream_end is None else min(stream_end, end + self._pad)
            self._last_end = padded
            events.append(VadEvent("end", padded / STREAM_RATE))
        self._triggered = self._confirmed = False
        self._temp_end = None

    def process(self, chunk) -> list[VadEvent]:
        """Feed the next chunk of the 16 kHz stream; returns the speech start/end events it settles."""
        x = stream_samples(chunk, "VoiceActivityDetector.process")
        buf = np.concatenate([self._buf, x]) if self._buf.size else x
        events: list[VadEvent] = []
        n = buf.size // _WINDOW
        for k in range(n):
            self._step(self._score(buf[k * _WINDOW : (k + 1) * _WINDOW]), events)
            self._window_start += _WINDOW
        self._buf = buf[n * _WINDOW :].copy()
        return events

    def flush(self) -> list[VadEvent]:
        """End the stream: score the buffered partial window (zero-padded, as silero does) and close
        open speech at the end of the audio; then start over as after :meth:`reset`."""
        events: list[VadEvent] = []
        stream_end = self._window_start + self._buf.size
        if self._buf.size:
            self._step(self._score(np.pad(self._buf, (0, _WINDOW - self._buf.size))), events)
        if self._triggered:
            end = stream_end if self._temp_end is None else self._temp_end
            if not self._confirmed and self._temp_end is None and end - self._start > self._min_speech:
                self._confirmed = True
                events.append(VadEvent("start", max(self._last_end, self._start - self._pad) / STREAM_RATE))
            self._close(end, events, stream_end)
        self.reset()
        return events

    def segments(self, audio) -> list[SpeechSegment]:
        """Speech segments of a whole clip (any sample rate), from a fresh state."""
        x = clip_samples(audio, "VoiceActivityDetector.segments")
        self.reset()
        events = self.process(x) + self.flush()
        starts = [e.time for e in events if e.kind == "start"]
        ends = [e.time for e in events if e.kind == "end"]
        return [SpeechSegment(s, e) for s, e in zip(starts, ends)]

    def __repr__(self) -> str:
        return f"<VoiceActivityDetector threshold={self.threshold} on {self.session.placement.device.id}>"
