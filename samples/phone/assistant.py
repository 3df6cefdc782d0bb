"""Offline voice assistant for a phone: wake word -> VAD -> ASR -> LLM -> tool -> TTS, each stage placed on its own processor.

    python samples/phone/assistant.py question.wav --out answer.wav
    python samples/phone/assistant.py booking.wav --bookings bookings/   # "okay nabu, book me a flight from Paris to Rome on Friday"
    python samples/phone/assistant.py --mic                      # where a microphone (ALSA arecord) exists
    python samples/phone/assistant.py question.wav --cloud http://127.0.0.1:8080 --min-confidence 0.5

Prints what it heard and answered, where every stage ran and how long it took, and writes the
spoken answer to --out. A flight booking request becomes a book_flight tool call that writes the
booking to --bookings, and the model's confirmation is spoken (see travel.py). With --cloud, other
answers may escalate to that OpenAI-compatible server when the privacy policy allows and the
device answer is not confident enough; private data is redacted or kept on the device (--privacy).
Bookings never leave the device.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import attrs
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # travel.py beside this file, wherever it is run from

from edgesdk import Session, SessionOptions  # noqa: E402
from edgesdk.audio import Audio, read_wav, write_wav  # noqa: E402
from edgesdk.pipeline import (
    AsrStage,
    Frame,
    LlmStage,
    Pipeline,
    StageSpec,
    TtsStage,
    VadStage,
    WakeWordStage,  # noqa: E402
    audio_frames,
)

from travel import PlannerStage, ReplyStage, ToolStage, book_flight  # noqa: E402

# The seeds' layout: always-on listening on the low-power DSP, ASR and the LLM on the NPU, TTS on
# the CPU. Where a processor is missing the next one in each list is used (and the report says so).
PLACEMENT = {
    "wake": ("dsp", "npu", "cpu"),
    "vad": ("dsp", "cpu"),
    "asr": ("npu", "gpu", "cpu"),
    "llm": ("npu", "gpu", "cpu"),
    "tts": ("cpu",),
}
SYSTEM_PROMPT = "You are a helpful voice assistant. Answer in one or two short sentences."


def short_commands(options: SessionOptions) -> SessionOptions:
    """Whisper over a 10 s window instead of 30 s for short spoken requests: the ctranslate2 plugin's ``window_s``
    (an app names its backends' options; voice_assistant() takes them per stage, ``backend_options={"asr": {...}}``)."""
    ct2 = {"window_s": 10, **options.backend_options.get("ctranslate2", {})}
    return attrs.evolve(options, backend_options={**options.backend_options, "ctranslate2": ct2})


def build_pipeline(
    *,
    wake_word: str | None,
    options: SessionOptions,
    bookings: Path,
    max_tokens: int,
    orchestrator=None,
    llm="hub:smollm2-135m",
    asr="hub:whisper-tiny-en",
    voice="hub:piper-joe-us",
) -> Pipeline:
    """voice_assistant()'s stages with the tool step between the LLM and TTS: llm -> tool -> reply.

    Built here, not with voice_assistant(), because that takes no extra stages.
    """
    from edgesdk.audio import SpeechRecognizer, TextToSpeech, VoiceActivityDetector, WakeWordDetector

    shared: dict[str, Session] = {}  # the llm stage's session, which the reply stage uses too

    def planner(o):
        session = shared["llm"] = Session(llm, o)
        return PlannerStage(LlmStage(orchestrator(session) if orchestrator else session, SYSTEM_PROMPT, max_tokens))

    specs = [StageSpec("wake", lambda o: WakeWordStage(WakeWordDetector(wake_word, o)), prefer=PLACEMENT["wake"])] if wake_word else []
    specs += [
        StageSpec("vad", lambda o: VadStage(VoiceActivityDetector(options=o), always_listen=wake_word is None), prefer=PLACEMENT["vad"]),
        StageSpec("asr", lambda o: AsrStage(SpeechRecognizer(asr, short_commands(o))), prefer=PLACEMENT["asr"]),
        StageSpec("llm", planner, prefer=PLACEMENT["llm"]),
        StageSpec("tool", lambda o: ToolStage({"book_flight": functools.partial(book_flight, bookings)})),
        StageSpec("reply", lambda o: ReplyStage(shared["llm"]), memory_mb=0),  # the same model: counted once in the budget
        StageSpec("tts", lambda o: TtsStage(TextToSpeech(voice, o)), prefer=PLACEMENT["tts"]),
    ]
    pipe = Pipeline(specs, options=options, memory_budget_mb=options.memory_budget_mb)
    try:
        pipe.warmup()  # so the first request's latency is a steady-state one
    except BaseException:
        pipe.close()
        raise
    return pipe


def microphone_frames(frame_ms: int = 20):
    """16 kHz mono frames from ALSA's arecord until Ctrl-C."""
    import time

    exe = shutil.which("arecord")
    if exe is None:
        raise SystemExit("no microphone support here: ALSA's arecord was not found (apt-get install alsa-utils), pass a WAV file instead")
    proc = subprocess.Popen([exe, "-q", "-f", "S16_LE", "-r", "16000", "-c", "1", "-t", "raw"], stdout=subprocess.PIPE)
    step = 16000 * frame_ms // 1000
    start = 0.0
    try:
        while True:
            raw = proc.stdout.read(step * 2)
            if len(raw) < step * 2:
                return
            x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
            yield Frame(x, start, time.perf_counter())
            start += step / 16000
    finally:
        proc.terminate()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("wav", nargs="?", help="input speech (any sample rate; 'okay nabu, <question>')")
    src.add_argument("--mic", action="store_true", help="listen to the microphone (ALSA)")
    p.add_argument("--out", default="answer.wav", help="where to write the spoken answer (default answer.wav)")
    p.add_argument("--wake-word", default="okay-nabu", help="okay-nabu, hey-jarvis, alexa, or 'none' to answer any speech")
    p.add_argument("--realtime", action="store_true", help="feed the WAV at the speed of speech (latencies as a user feels them)")
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--bookings", default="bookings", help="folder the book_flight tool writes bookings to (default ./bookings)")
    p.add_argument("--cloud", metavar="URL", help="OpenAI-compatible server answers may escalate to")
    p.add_argument("--cloud-model", default="default")
    p.add_argument("--privacy", choices=["strict", "redact", "allow"], default="redact")
    p.add_argument("--min-confidence", type=float, default=0.0, help="escalate device answers below this confidence")
    args = p.parse_args(argv)

    options = SessionOptions.for_device("phone")
    orchestrator = None
    if args.cloud:
        from edgesdk.hybrid import OpenAICompatible, Orchestrator, Policy

        cloud = OpenAICompatible(args.cloud, model=args.cloud_model, timeout_s=60)
        policy = Policy(privacy=args.privacy, min_confidence=args.min_confidence)

        def orchestrator(session):
            return Orchestrator(session, cloud, policy, max_tokens=args.max_tokens)

    wake = None if args.wake_word == "none" else args.wake_word
    speech = None if args.mic else read_wav(args.wav)  # a bad file fails before minutes of model loading
    print("loading models...", file=sys.stderr)
    pipe = build_pipeline(wake_word=wake, options=options, bookings=Path(args.bookings), max_tokens=args.max_tokens, orchestrator=orchestrator)
    frames = microphone_frames() if args.mic else audio_frames(speech, realtime=args.realtime)
    spoken: list[np.ndarray] = []
    rate = 22050
    try:
        for ev in pipe.run(frames):
            if ev.kind == "wake":
                print(f"[wake word] {ev.value.wake_word} (p={ev.value.probability:.2f})")
            elif ev.kind == "transcript":
                print(f"[you] {ev.value}")
            elif ev.kind == "route":
                print(f"[route] {ev.value}")
            elif ev.kind == "tool_call":
                print(f"[tool call] {ev.value.name} {json.dumps(ev.value.arguments)}")
            elif ev.kind == "tool_call_refused":
                call, _question = ev.value  # the question itself follows as the answer
                print(f"[tool call refused] {call.name} {json.dumps(call.arguments)}: does not match what was said")
            elif ev.kind == "tool_result":
                print(f"[tool result] {ev.value.content} ({ev.value.path})")
            elif ev.kind == "answer":
                print(f"[assistant] {ev.value.strip()}")
            elif ev.kind == "cancelled":
                print(f"[barge-in] answer {ev.turn} cancelled")
            elif ev.kind == "listen_timeout":
                print("[no command heard after the wake word]")
            elif ev.kind == "output":
                spoken.append(ev.value.samples)
                rate = ev.value.sample_rate
    except KeyboardInterrupt:
        pass
    finally:
        pipe.close()
    print()
    print(pipe.report())
    if spoken:
        write_wav(args.out, Audio(np.concatenate(spoken), rate))
        print(f"spoken answer: {args.out} ({sum(s.size for s in spoken) / rate:.1f} s)")
    else:
        print("nothing to answer (no wake word and command heard)")
    return 0


if __name__ == "__main__":
    from edgesdk import EdgeSDKError

    try:
        sys.exit(main())
    except EdgeSDKError as exc:
        sys.exit(f"error: {exc}")
