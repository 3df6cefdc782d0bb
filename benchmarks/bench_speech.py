"""Speech in and out: TTS and ASR real-time factors, streaming first-chunk latency, round-trip WER.

    HF_HUB_OFFLINE=1 python benchmarks/bench_speech.py [--rounds 3] [--threads N]

TTS is the piper voice (hub:piper-joe-us) through edgesdk.Session; ASR is Whisper tiny.en
(hub:whisper-tiny-en) through the edgesdk-ctranslate2 plugin, at each compute type and beam size
listed. Every stage is warmed up once, then timed ``--rounds`` times over the whole sentence set;
the median round is reported. RTF = compute seconds / audio seconds (< 1 is faster than real time).
WER is the corpus word error rate of ASR(TTS(text)) against the text, with the voice's default
noise (what a user hears), so it varies a little between runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from edgesdk import SessionOptions  # noqa: E402
from edgesdk.audio import SpeechRecognizer, TextToSpeech, word_error_rate  # noqa: E402

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please turn on the kitchen lights.",
    "What is the weather like in Paris tomorrow?",
    "Remind me to call my mother this evening.",
    "Play some relaxing music in the living room.",
    "How far away is the nearest gas station?",
    "Open the window and close the door.",
    "Navigate to the closest coffee shop with parking.",
]
PARAGRAPH = " ".join(SENTENCES[:4])


def _median_round(fn, rounds: int) -> float:
    fn()  # warm-up: first-call allocations and lazy initialisation are not steady state
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for both models (default: each runtime's own)")
    args = ap.parse_args(argv)
    opts = SessionOptions(threads=args.threads)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, threads={args.threads or 'runtime default'}")

    rows = []
    tts = TextToSpeech(options=opts)
    clips = [tts.synthesize(s) for s in SENTENCES]
    audio_s = sum(c.duration for c in clips)
    t = _median_round(lambda: [tts.synthesize(s) for s in SENTENCES], args.rounds)
    rows.append(("tts piper joe-medium", audio_s, t, tts.session.placement.device.id, ""))

    def first_chunk():
        it = tts.stream(PARAGRAPH)
        next(it)
        it.close()

    first = _median_round(first_chunk, args.rounds)
    whole = _median_round(lambda: tts.synthesize(PARAGRAPH), args.rounds)
    para_s = tts.synthesize(PARAGRAPH).duration

    for precision, beam in (("auto", 5), ("auto", 1), ("fp32", 5)):
        o = SessionOptions(threads=args.threads, precision=precision, backend_options={"ctranslate2": {"beam_size": beam}})
        with SpeechRecognizer(options=o) as asr:
            hyps = [asr.transcribe(c).text for c in clips]
            t = _median_round(lambda: [asr.transcribe(c) for c in clips], args.rounds)
            wer = word_error_rate(SENTENCES, hyps)
            label = f"asr whisper-tiny.en {asr.session.runner.compute_type} beam={beam}"
            rows.append((label, audio_s, t, asr.session.placement.device.id, f"{wer:.3f}"))

    print(f"\n{len(SENTENCES)} sentences, {audio_s:.1f} s of speech; median of {args.rounds} rounds after a warm-up\n")
    print(f"| {'stage':<40} | audio s | compute s |   RTF | {'placement':<17} | WER   |")
    print(f"|{'-' * 42}|--------:|----------:|------:|{'-' * 19}|-------|")
    for stage, a, c, where, wer in rows:
        print(f"| {stage:<40} | {a:7.2f} | {c:9.3f} | {c / a:5.3f} | {where:<17} | {wer:<5} |")
    print(
        f"\nTTS streaming, {len(SENTENCES[:4])}-sentence paragraph ({para_s:.1f} s of speech): first chunk after "
        f"{first * 1000:.0f} ms, whole paragraph {whole * 1000:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
