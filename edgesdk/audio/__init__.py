"""Audio building blocks for speech pipelines: WAV I/O and resampling, wake word, voice activity,
speech recognition and text to speech. Each model-backed block runs through an :class:`edgesdk.Session`
(``block.session``), so its placement is reported like any other model's.

Submodules are imported on first use: importing ``edgesdk.audio`` loads no model runtime.
"""

from __future__ import annotations

from .._lazy import lazy_getattr
from ._wav import Audio, read_wav, resample, write_wav

# name -> private module that defines it
_LAZY = {
    "TextToSpeech": "._tts",
    "SpeechRecognizer": "._asr",
    "Transcript": "._asr",
    "WakeWordDetector": "._wakeword",
    "Detection": "._wakeword",
    "VoiceActivityDetector": "._vad",
    "SpeechSegment": "._vad",
    "VadEvent": "._vad",
    "word_error_rate": "._wer",
}

__all__ = ["Audio", "read_wav", "write_wav", "resample", *_LAZY]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
