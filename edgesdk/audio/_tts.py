"""Text to speech with a piper (VITS) voice: espeak-ng phonemes -> ids -> ONNX through a Session."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from .. import hub
from .._errors import InputError, MissingDependencyError, ModelFormatError, ModelNotFoundError
from .._options import SessionOptions
from .._block import SessionBlock
from .._session import Session
from ._wav import Audio

__all__ = ["TextToSpeech"]

log = logging.getLogger(__name__)

_BOS, _EOS, _PAD = "^", "$", "_"

# espeak-ng keeps one global voice and state per process: phonemize one text at a time.
_ESPEAK_LOCK = threading.Lock()
_espeak = None


def _phonemizer():
    global _espeak
    if _espeak is None:
        try:
            from piper.phonemize_espeak import EspeakPhonemizer
        except ImportError as exc:
            raise MissingDependencyError("TextToSpeech (espeak-ng phonemizer)", "piper-tts", str(exc)) from exc
        _espeak = EspeakPhonemizer()
    return _espeak


def _config_path(model: Path) -> Path:
    for cand in (model.with_name(model.name + ".json"), model.with_suffix(".json")):
        if cand.is_file():
            return cand
    raise ModelNotFoundError(model, f"piper voice config {model.name}.json is missing next to the voice")


class TextToSpeech(SessionBlock):
    """Speak text with a piper voice; the voice ONNX runs through :attr:`session` (placement reported).

    ``noise_scale``, ``length_scale`` (> 1 speaks slower) and ``noise_w`` default to the voice's own
    inference settings; ``noise_scale=0, noise_w=0`` makes the output deterministic.
    """

    def __init__(
        self,
        voice="hub:piper-joe-us",
        options: SessionOptions | None = None,
        *,
        noise_scale: float | None = None,
        length_scale: float | None = None,
        noise_w: float | None = None,
        **session_overrides,
    ):
        model = Path(hub.resolve(voice))
        cfg_path = _config_path(model)
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            self.sample_rate = int(cfg["audio"]["sample_rate"])
            self._id_map = {k: list(v) for k, v in cfg["phoneme_id_map"].items()}
            self._espeak_voice = cfg.get("espeak", {}).get("voice", "en-us")
            inference = cfg.get("inference", {})
            phoneme_type = cfg.get("phoneme_type", "espeak")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelFormatError(cfg_path, f"not a valid piper voice config: {type(exc).__name__}: {exc}") from exc
        if phoneme_type != "espeak":
            raise ModelFormatError(cfg_path, f"phoneme_type {phoneme_type!r} is not supported (only espeak voices)")
        missing = [s for s in (_BOS, _EOS, _PAD) if s not in self._id_map]
        if missing:
            raise ModelFormatError(cfg_path, f"phoneme_id_map lacks the control symbols {missing}")
        scales = (
            inference.get("noise_scale", 0.667) if noise_scale is None else noise_scale,
            inference.get("length_scale", 1.0) if length_scale is None else length_scale,
            inference.get("noise_w", 0.8) if noise_w is None else noise_w,
        )
        if not all(isinstance(v, (int, float)) and np.isfinite(v) and v >= 0 for v in scales) or scales[1] <= 0:
            raise InputError(f"scales must be finite and >= 0 (length_scale > 0), got noise_scale, length_scale, noise_w = {scales}")
        self._scales = np.array(scales, np.float32)
        _phonemizer()  # fail at construction, not at the first sentence, when piper-tts is missing
        self.voice = str(model)
        self.session = Session(model, options, **session_overrides)
        names = {i.name for i in self.session.inputs}
        if not {"input", "input_lengths", "scales"} <= names:
            raise ModelFormatError(model, f"not a piper voice: inputs are {sorted(names)}, expected input, input_lengths, scales")
        self._sid = np.zeros(1, np.int64) if "sid" in names else None

    @property
    def placement(self):
        return self.session.placement

    def _sentences(self, text) -> list[list[str]]:
        if not isinstance(text, str):
            raise InputError(f"text must be a str, got {type(text).__name__}")
        if not text.strip():
            raise InputError("text is empty")
        with _ESPEAK_LOCK:
            sentences = _phonemizer().phonemize(self._espeak_voice, text)
        sentences = [s for s in sentences if any(p.strip() for p in s)]
        if not sentences:
            raise InputError(f"no speakable text in {text[:40]!r}")
        return sentences

    def _ids(self, phonemes: list[str]) -> np.ndarray:
        ids = self._id_map[_BOS] + self._id_map[_PAD]
        unknown = set()
        for p in phonemes:
            mapped = self._id_map.get(p)
            if mapped is None:
                unknown.add(p)
                continue
            ids += mapped + self._id_map[_PAD]
        ids += self._id_map[_EOS]
        if unknown:
            log.warning("voice %s has no id for phoneme(s) %s; skipped", Path(self.voice).name, sorted(unknown))
        return np.array([ids], np.int64)

    def _speak(self, phonemes: list[str]) -> Audio:
        ids = self._ids(phonemes)
        feeds = {"input": ids, "input_lengths": np.array([ids.shape[1]], np.int64), "scales": self._scales}
        if self._sid is not None:
            feeds["sid"] = self._sid
        out = next(iter(self.session.run(feeds).values()))
        # The decoder's tanh output can overshoot slightly after the final conv; clip as piper does.
        return Audio(np.clip(np.asarray(out, np.float32).reshape(-1), -1.0, 1.0), self.sample_rate)

    def stream(self, text: str) -> Iterator[Audio]:
        """One :class:`Audio` chunk per sentence, each yielded as soon as it is synthesized."""
        sentences = self._sentences(text)  # validate before the first next(), so errors surface at the call
        return (self._speak(s) for s in sentences)

    def synthesize(self, text: str) -> Audio:
        """The whole text as one :class:`Audio` at :attr:`sample_rate`."""
        chunks = [c.samples for c in self.stream(text)]
        return Audio(np.concatenate(chunks), self.sample_rate)

    @property
    def sessions(self) -> dict:
        return {"tts": self.session}

    def __repr__(self) -> str:
        return f"<TextToSpeech {Path(self.voice).name!r} {self.sample_rate} Hz on {self.session.placement.device.id}>"
