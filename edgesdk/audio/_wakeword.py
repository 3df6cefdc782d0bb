"""Wake word detection with microWakeWord streaming models, run through :class:`edgesdk.Session`.

The front end is ``pymicro-features`` (the TFLite Micro speech front end microWakeWord is trained
on: 30 ms windows every 10 ms, 40 log-mel-like features). Features are fed to the model ``stride``
frames at a time (the model's input is ``[1, stride, 40]`` int8), quantized with the input tensor's
scale and zero point; the model keeps its streaming state inside the interpreter between calls.
A wake word fires when the mean of the last ``sliding_window`` probabilities exceeds
``probability_cutoff`` (both read from the model's JSON), the rule ESPHome and pymicro-wakeword use.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from pathlib import Path

import attrs
import numpy as np

from .. import hub
from .._errors import InputError, MissingDependencyError, ModelLoadError, UnsupportedModelError
from .._options import SessionOptions
from .._session import Session
from ._stream import STREAM_RATE, clip_samples, small_model_options, stream_samples

__all__ = ["WakeWordDetector", "Detection"]

log = logging.getLogger("edgesdk.audio.wakeword")

_HOP = 160  # samples per feature frame (10 ms at 16 kHz); the front end consumes audio in these steps
_N_FEATURES = 40


@attrs.frozen
class Detection:
    """A wake word heard in the stream: ``time`` is seconds since the stream (or last reset) began,
    at the end of the audio that completed the detection; ``probability`` is the windowed mean."""

    wake_word: str
    time: float
    probability: float


def _resolve(model) -> Path:
    if isinstance(model, os.PathLike) or (isinstance(model, str) and (model.endswith(".tflite") or os.sep in model)):
        p = Path(os.fspath(model))
        if not p.is_file():
            raise ModelLoadError(p, "no such wake word model file")
        return p
    if not isinstance(model, str):
        raise InputError(f"model must be a wake word name, hub name or .tflite path, got {type(model).__name__}")
    key = model[4:] if model.startswith("hub:") else model
    names = [n for n, m in hub.CATALOG.items() if m.task == "wakeword"]
    for candidate in (key, f"wakeword-{key}"):
        if candidate in names:
            return hub.path(candidate)
    short = ", ".join(n.removeprefix("wakeword-") for n in names)
    raise hub.HubError(f"unknown wake word model {model!r}; known: {short} (or a path to a microWakeWord .tflite)")


def _config(path: Path) -> dict:
    """The microWakeWord JSON beside the model: wake word phrase and detection parameters."""
    cfg_path = path.with_suffix(".json")
    if not cfg_path.is_file():
        return {}
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        micro = cfg.get("micro", {})
        return {
            "wake_word": str(cfg.get("wake_word") or path.stem),
            "probability_cutoff": float(micro["probability_cutoff"]),
            "sliding_window": int(micro["sliding_window_size"]),
            "feature_step_ms": int(micro.get("feature_step_size", 10)),
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelLoadError(cfg_path, f"not a microWakeWord model config ({type(exc).__name__}: {exc})") from None


def _frontend():
    try:
        from pymicro_features import MicroFrontend
    except ImportError as exc:
        raise MissingDependencyError("wake word detection", "pymicro-features", str(exc)) from None
    return MicroFrontend()


class WakeWordDetector:
    """Streaming wake word detector.

    ``model``: a wake word name (``"okay-nabu"``, ``"hey-jarvis"``, ``"alexa"``), a hub name
    (``"hub:wakeword-okay-nabu"``) or a path to a microWakeWord ``.tflite`` (its ``.json`` beside it
    supplies the phrase and defaults). ``options`` / ``session_overrides`` go to the
    :class:`~edgesdk.Session` (exposed as :attr:`session`; one CPU thread unless set).

    :meth:`process` takes consecutive chunks of one 16 kHz stream, of any size, and returns the
    detections they complete; each utterance fires once (the detector re-arms when the windowed
    probability falls back to the cutoff). :meth:`detect` runs a whole clip from a fresh state.
    """

    def __init__(
        self,
        model="okay-nabu",
        options: SessionOptions | None = None,
        probability_cutoff: float | None = None,
        sliding_window: int | None = None,
        **session_overrides,
    ):
        path = _resolve(model)
        cfg = _config(path)
        if probability_cutoff is None:
            probability_cutoff = cfg.get("probability_cutoff")
        if sliding_window is None:
            sliding_window = cfg.get("sliding_window")
        if probability_cutoff is None or sliding_window is None:
            raise ModelLoadError(path, "no microWakeWord JSON beside it; pass probability_cutoff= and sliding_window=")
        if not 0.0 < float(probability_cutoff) < 1.0:
            raise InputError(f"probability_cutoff must be in (0, 1), got {probability_cutoff!r}")
        if isinstance(sliding_window, bool) or not isinstance(sliding_window, (int, np.integer)) or sliding_window < 1:
            raise InputError(f"sliding_window must be a positive integer, got {sliding_window!r}")
        if cfg.get("feature_step_ms", 10) != 10:
            raise UnsupportedModelError(path, f"feature step {cfg['feature_step_ms']} ms; the micro front end steps 10 ms")
        self.wake_word: str = cfg.get("wake_word", path.stem)
        self.probability_cutoff = float(probability_cutoff)
        self.sliding_window = int(sliding_window)
        self.session = Session(str(path), small_model_options(options, session_overrides), **session_overrides)
        self._check_signature(path)
        self._frontend = _frontend()
        self.reset()

    def _check_signature(self, path: Path) -> None:
        ins, outs = self.session.inputs, self.session.outputs
        if (
            len(ins) != 1
            or len(outs) != 1
            or ins[0].shape is None
            or len(ins[0].shape) != 3
            or ins[0].shape[0] != 1
            or ins[0].shape[2] != _N_FEATURES
            or not isinstance(ins[0].shape[1], int)
        ):
            raise UnsupportedModelError(
                path,
                f"not a microWakeWord streaming model: inputs {[str(i) for i in ins]}, "
                f"outputs {[str(o) for o in outs]} (expected one [1, stride, {_N_FEATURES}] input and one score)",
            )
        self._in, self._out = ins[0], outs[0]
        self.stride: int = ins[0].shape[1]
        quant = getattr(self.session.runner, "quantization", None)
        if self._in.dtype.kind in "iu" and (quant is None or self._in.name not in quant):
            raise UnsupportedModelError(
                path, f"backend {self.session.placement.backend!r} reports no input quantization for the {self._in.dtype} input; cannot quantize features"
            )
        self._in_q = quant.get(self._in.name) if quant else None
        self._out_q = quant.get(self._out.name) if quant else None
        if self._in_q is not None:
            info = np.iinfo(self._in.dtype)
            self._q_min, self._q_max = info.min, info.max

    def reset(self) -> None:
        """Forget the stream: front end, buffered audio, model state, probabilities."""
        self._frontend.reset()
        self._pcm = np.zeros(0, np.int16)
        self._frames: list[list[float]] = []
        self._probs: deque[float] = deque(maxlen=self.sliding_window)
        self._consumed = 0  # samples the front end has read since the reset: the stream clock
        self._armed = True
        self._max_mean = 0.0
        reset_state = getattr(self.session.runner, "reset_state", None)
        if reset_state is not None:
            reset_state()
        else:  # a backend without in-place reset: a fresh session is the only clean state
            self.session = Session(self.session.model.path, self.session.options)

    def process(self, chunk) -> list[Detection]:
        """Feed the next chunk of the 16 kHz stream; returns the detections it completes."""
        x = stream_samples(chunk, "WakeWordDetector.process")
        pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
        buf = np.concatenate([self._pcm, pcm]) if self._pcm.size else pcm
        out: list[Detection] = []
        i = 0
        while buf.size - i >= _HOP:
            res = self._frontend.process_samples(buf[i : i + _HOP].tobytes())
            if res.samples_read <= 0:  # never expected; guards against an endless loop
                raise InputError("the micro front end consumed no samples")
            i += res.samples_read
            self._consumed += res.samples_read
            if res.features:
                self._frames.append(res.features)
                if len(self._frames) == self.stride:
                    det = self._infer()
                    if det is not None:
                        out.append(det)
        self._pcm = buf[i:].copy()
        return out

    def _infer(self) -> Detection | None:
        feats = np.asarray(self._frames, np.float32)[None]
        self._frames.clear()  # the model strides over its input rather than sliding
        if self._in_q is not None:
            scale, zero = self._in_q
            feats = np.clip(np.round(feats / scale + zero), self._q_min, self._q_max).astype(self._in.dtype)
        raw = self.session.run({self._in.name: feats})[self._out.name]
        p = float(raw.reshape(-1)[0])
        if self._out_q is not None:
            p = (p - self._out_q[1]) * self._out_q[0]
        self._probs.append(p)
        if len(self._probs) < self.sliding_window:
            return None
        mean = float(np.mean(self._probs))
        self._max_mean = max(self._max_mean, mean)
        if mean <= self.probability_cutoff:
            self._armed = True
            return None
        if not self._armed:
            return None
        self._armed = False
        det = Detection(self.wake_word, self._consumed / STREAM_RATE, mean)
        log.debug("wake word %r at %.2f s (p=%.3f)", det.wake_word, det.time, det.probability)
        return det

    def detect(self, audio) -> list[Detection]:
        """Detections in a whole clip (any sample rate), from a fresh state (the detector is reset first)."""
        x = clip_samples(audio, "WakeWordDetector.detect")
        self.reset()
        return self.process(x)

    @property
    def max_probability(self) -> float:
        """The highest windowed probability seen so far in this stream (0 before the window fills)."""
        return self._max_mean

    def __repr__(self) -> str:
        return f"<WakeWordDetector {self.wake_word!r} cutoff={self.probability_cutoff} on {self.session.placement.device.id}>"
