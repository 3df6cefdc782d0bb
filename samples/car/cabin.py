"""Cabin command assistant for a car head unit: wake word -> VAD -> ASR -> intent, fully offline.

    python samples/car/cabin.py commands.wav --json-out commands.json --budget-ms 1500
    python samples/car/cabin.py commands.wav --method rank      # nine prefills per command instead of one generation

Every utterance after the wake word becomes one structured command validated against
commands.schema.json (``{"action": "set_temperature", "value": 21, "zone": "all"}``), or an
``unknown`` command with the reason, which the car would turn into a clarification question.
Prints each command as JSON, whether it met the latency budget (end of speech -> command), and
where every stage ran; --json-out gets all commands as one JSON list.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # intents.py beside this file, wherever it is run from

from edgesdk import Session, SessionOptions  # noqa: E402
from edgesdk._io import atomic_write_bytes  # noqa: E402
from edgesdk.audio import read_wav  # noqa: E402
from edgesdk.pipeline import AsrStage, Pipeline, Stage, StageSpec, VadStage, WakeWordStage, audio_frames  # noqa: E402

from intents import DEFAULT_METHOD, METHODS, interpret, make_classifier  # noqa: E402

# A head unit's layout: always-on listening on the low-power DSP, speech and intent on the NPU.
# Where a processor is missing the next one in each list is used, and the report says so.
PLACEMENT = {"wake": ("dsp", "npu", "cpu"), "vad": ("dsp", "cpu"), "asr": ("npu", "gpu", "cpu"), "intent": ("npu", "gpu", "cpu")}


class IntentStage(Stage):
    """Transcript -> one schema-valid command dict (``unknown`` with the reason when it is not one)."""

    name = "intent"

    def __init__(self, classifier):
        self.classifier = classifier  # one of intents.METHODS

    @property
    def sessions(self):
        return {"llm": self.classifier.session}

    def warmup(self) -> None:
        self.classifier.warmup()

    def process(self, value, ctx):
        intent = interpret(value, self.classifier)
        ctx.emit("intent", intent)
        yield intent.command


def build_pipeline(wake_word: str, llm: str, asr: str, method: str = DEFAULT_METHOD) -> Pipeline:
    from edgesdk.audio import SpeechRecognizer, VoiceActivityDetector, WakeWordDetector

    options = SessionOptions.for_device("car")
    specs = [
        StageSpec("wake", lambda o: WakeWordStage(WakeWordDetector(wake_word, o), barge_in=False), prefer=PLACEMENT["wake"]),
        StageSpec("vad", lambda o: VadStage(VoiceActivityDetector(options=o)), prefer=PLACEMENT["vad"]),
        StageSpec("asr", lambda o: AsrStage(SpeechRecognizer(asr, o)), prefer=PLACEMENT["asr"]),
        StageSpec("intent", lambda o: IntentStage(make_classifier(method, Session(llm, o))), prefer=PLACEMENT["intent"]),
    ]
    pipe = Pipeline(specs, options=options, memory_budget_mb=options.memory_budget_mb)
    try:
        pipe.warmup()  # so the first command's latency is a steady-state one
    except BaseException:
        pipe.close()
        raise
    return pipe


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("wav", help="cabin audio (any sample rate): 'okay nabu, <command>' one or more times")
    p.add_argument("--json-out", metavar="FILE", help="write every command as one JSON list (atomically)")
    p.add_argument("--budget-ms", type=float, default=1500.0, help="latency budget from end of speech to command (default 1500)")
    p.add_argument("--wake-word", default="okay-nabu", help="okay-nabu, hey-jarvis, alexa")
    p.add_argument("--realtime", action="store_true", help="feed the WAV at the speed of speech (latencies as a driver feels them)")
    p.add_argument("--llm", default="hub:smollm2-135m")
    p.add_argument("--asr", default="hub:whisper-tiny-en")
    p.add_argument("--method", choices=list(METHODS), default=DEFAULT_METHOD, help=f"how the LLM picks the action (default {DEFAULT_METHOD}; see intents.py)")
    args = p.parse_args(argv)
    if args.budget_ms <= 0:
        p.error("--budget-ms must be positive")

    speech = read_wav(args.wav)  # a bad file fails before seconds of model loading
    print("loading models...", file=sys.stderr)
    pipe = build_pipeline(args.wake_word, args.llm, args.asr, args.method)
    commands: list[dict] = []
    ends: dict[int, float] = {}
    try:
        for ev in pipe.run(audio_frames(speech, realtime=args.realtime)):
            if ev.kind == "wake":
                print(f"[wake word] {ev.value.wake_word} (p={ev.value.probability:.2f})")
            elif ev.kind == "speech_end":
                ends[ev.turn] = ev.time  # when the last speech sample arrived
            elif ev.kind == "transcript":
                print(f"[heard] {ev.value}")
            elif ev.kind == "listen_timeout":
                print("[no command heard after the wake word]")
            elif ev.kind == "output":
                commands.append(ev.value)
                ms = (ev.time - ends[ev.turn]) * 1000 if ev.turn in ends else float("nan")
                verdict = "within" if ms <= args.budget_ms else "OVER"
                print(json.dumps(ev.value))
                print(f"[latency] turn {ev.turn}: {ms:.0f} ms from end of speech to command, {verdict} the {args.budget_ms:g} ms budget")
    finally:
        pipe.close()
    print()
    print(pipe.report())
    if args.json_out:
        atomic_write_bytes(args.json_out, (json.dumps(commands, indent=2) + "\n").encode("utf-8"))
        print(f"commands: {args.json_out} ({len(commands)})")
    if not commands:
        print("no command heard (no wake word followed by speech)")
    return 0


if __name__ == "__main__":
    from edgesdk import EdgeSDKError

    try:
        sys.exit(main())
    except EdgeSDKError as exc:
        sys.exit(f"error: {exc}")
