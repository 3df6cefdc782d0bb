"""Multi-stage apps (wake word -> VAD -> ASR -> LLM -> TTS, OCR -> summary, ...), each stage on its own placement.

from edgesdk.pipeline import Pipeline, StageSpec
pipe = Pipeline([StageSpec("asr", build_asr), StageSpec("llm", build_llm)], memory_budget_mb=1024)
for event in pipe.run(frames):
    ...
print(pipe.report())
"""

from ._core import Event, FunctionStage, Pipeline, Stage, StageContext, StageSpec
from ._voice import AsrStage, Frame, LlmStage, TtsStage, VadStage, WakeWordStage, audio_frames, voice_assistant
from ._report import PipelineReport, StageReport, TurnReport

__all__ = [
    "Pipeline",
    "Stage",
    "FunctionStage",
    "StageSpec",
    "StageContext",
    "Event",
    "PipelineReport",
    "StageReport",
    "TurnReport",
    "Frame",
    "audio_frames",
    "voice_assistant",
    "WakeWordStage",
    "VadStage",
    "AsrStage",
    "LlmStage",
    "TtsStage",
]
