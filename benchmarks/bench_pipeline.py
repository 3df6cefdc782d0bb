"""Phone voice-assistant pipeline: time from end of speech to first answer audio, per-stage cost, peak RSS.

    python benchmarks/bench_pipeline.py                  # realtime-paced input, 6 utterances
    python benchmarks/bench_pipeline.py --fast --utterances 3

Every utterance is "okay nabu" + a question, synthesized once with the piper voice and fed as one
16 kHz stream (at the speed of speech with the default --realtime, so latencies are what a user
feels). Compared in the same run, on the same loaded models:

- floor: the latency the stages cannot go under when chained (VAD end-of-speech wait + ASR of the
  utterance + LLM time to its first clause + TTS of that clause), each measured alone;
- sequential: what an app without streaming does (ASR, then the whole LLM answer, then the whole TTS).

Target (issue 7): end of speech -> first TTS audio <= 1.5 s on this 2-core machine.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time

import numpy as np

QUESTIONS = [
    "What is the capital of France?",
    "How do I make a cup of tea?",
    "Tell me a fun fact about the moon.",
    "What is the weather usually like in spring?",
    "Can you suggest a name for a cat?",
    "Why is the sky blue?",
    "What should I cook for dinner tonight?",
    "How far away is the sun?",
]
TARGET_S = 1.5


def pct(values, q):
    return float(np.percentile(values, q)) if values else float("nan")


def first_clause(text: str) -> str:
    import re

    m = re.search(r"[.!?;:,](\s|$)", text)
    return text[: m.end()].strip() if m and len(text[: m.end()].strip()) >= 12 else text.strip()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utterances", type=int, default=6)
    ap.add_argument("--fast", action="store_true", help="feed audio as fast as the pipeline takes it (not realtime)")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument(
        "--gap", type=float, default=4.0, help="silence after each question, seconds (the answer plays meanwhile; a wake word during an answer is a barge-in)"
    )
    args = ap.parse_args(argv)
    if not 1 <= args.utterances <= len(QUESTIONS):
        ap.error(f"--utterances must be in [1, {len(QUESTIONS)}]")

    from edgesdk import SessionOptions
    from edgesdk.audio import Audio
    from edgesdk.pipeline import audio_frames, voice_assistant

    options = SessionOptions.for_device("phone")
    t0 = time.perf_counter()
    # Spoken questions are short: Whisper encodes a 10 s window instead of 30 s (the ctranslate2 plugin's window_s).
    pipe = voice_assistant(
        options=options, memory_budget_mb=options.memory_budget_mb, max_tokens=args.max_tokens, backend_options={"asr": {"ctranslate2": {"window_s": 10}}}
    )
    load_s = time.perf_counter() - t0
    tts = next(st for st in pipe.stages if st.name == "tts").tts
    asr = next(st for st in pipe.stages if st.name == "asr").recognizer
    llm_stage = next(st for st in pipe.stages if st.name == "llm")
    vad = next(st for st in pipe.stages if st.name == "vad").vad

    stream = Audio.silence(0.5)
    questions = QUESTIONS[: args.utterances]
    spoken = []
    for q in questions:
        wake, ask = tts.synthesize("Okay nabu.").to(16000), tts.synthesize(q).to(16000)
        spoken.append(ask)
        stream = stream + wake + Audio.silence(0.4) + ask + Audio.silence(args.gap)

    events = list(pipe.run(audio_frames(stream, realtime=not args.fast)))
    rep = pipe.report()
    firsts = [t.first_output_s for t in rep.turns if t.first_output_s is not None]  # a barge-in after the first audio still counts
    answers = {e.turn: e.value for e in events if e.kind == "answer"}
    heard = {e.turn: e.value for e in events if e.kind == "transcript"}

    # The same work without streaming, and the floor, on the same models (each step alone).
    hangover = vad.min_silence_ms / 1000
    floor, sequential = [], []
    for ask in spoken:
        t = time.perf_counter()
        text = asr.transcribe(ask).text
        asr_s = time.perf_counter() - t
        chat = [{"role": "system", "content": llm_stage.system_prompt}, {"role": "user", "content": text}]
        t = time.perf_counter()
        first_piece_at, pieces = None, []
        for piece in llm_stage.llm.generate_stream(chat, max_tokens=args.max_tokens):
            pieces.append(piece)
            if first_piece_at is None and first_clause("".join(pieces)) != "".join(pieces).strip():
                first_piece_at = time.perf_counter() - t
        llm_all_s = time.perf_counter() - t
        answer = "".join(pieces)
        clause = first_clause(answer)
        t = time.perf_counter()
        tts.synthesize(clause)
        tts_first_s = time.perf_counter() - t
        t = time.perf_counter()
        tts.synthesize(answer)
        tts_all_s = time.perf_counter() - t
        floor.append(hangover + asr_s + (first_piece_at or llm_all_s) + tts_first_s)
        sequential.append(hangover + asr_s + llm_all_s + tts_all_s)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"# phone pipeline, {len(questions)} utterances, {'fast' if args.fast else 'realtime'} input; "
        f"{platform.machine()} {platform.processor() or ''} {__import__('os').cpu_count()} cores; models loaded + warmed in {load_s:.1f} s"
    )
    print()
    print(rep)
    print()
    print("| end of speech -> first audio | p50 s | p90 s | max s | vs target 1.5 s | vs floor | vs sequential |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| edgesdk pipeline (streaming) | {pct(firsts, 50):.3f} | {pct(firsts, 90):.3f} | {max(firsts):.3f} | "
        f"{pct(firsts, 50) / TARGET_S:.2f}x | {pct(firsts, 50) / statistics.median(floor):.2f}x | {pct(firsts, 50) / statistics.median(sequential):.2f}x |"
    )
    print(f"| floor (stages alone, chained) | {pct(floor, 50):.3f} | {pct(floor, 90):.3f} | {max(floor):.3f} | {pct(floor, 50) / TARGET_S:.2f}x | 1.00x | |")
    print(
        f"| sequential (no streaming) | {pct(sequential, 50):.3f} | {pct(sequential, 90):.3f} | {max(sequential):.3f} | "
        f"{pct(sequential, 50) / TARGET_S:.2f}x | | 1.00x |"
    )
    print()
    print(
        f"turns with spoken answers: {len(firsts)}/{len(questions)} (cancelled by barge-in: {sum(t.cancelled for t in rep.turns)}); met the 1.5 s target: {sum(f <= TARGET_S for f in firsts)}/{len(firsts)}; "
        f"peak RSS {peak:.0f} MiB"
    )
    for turn in sorted(heard):
        print(f"  turn {turn}: heard {heard[turn]!r} -> {answers.get(turn, '').strip()[:70]!r}")
    pipe.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
