"""Real-time factor of the voice front end: wake word and voice activity detection.

    python benchmarks/bench_audio_frontend.py [--seconds 30] [--chunk-ms 80] [--repeats 5] [--json out.json]

A stream of ``--seconds`` of audio (synthesized speech and pauses when the piper voice is installed,
else pink noise) is fed in ``--chunk-ms`` chunks, as a microphone would deliver it. RTF = compute
seconds / audio seconds (median of ``--repeats`` passes; lower is better, 1.0 = just real time).
The micro-features row is the wake word's front end alone, to show how its time splits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_speech import _median_round  # noqa: E402  one timing rule (warm-up, median round) for every speech stage

from edgesdk.audio import Audio, VoiceActivityDetector, WakeWordDetector  # noqa: E402

SR = 16000
PHRASES = ["okay nabu", "what is the weather today", "hello there, how are you", "set a timer for ten minutes"]


def test_stream(seconds: float) -> tuple[Audio, str]:
    """Speech with pauses (realistic work for both blocks), or pink noise when no voice is installed."""
    try:
        from edgesdk.audio import TextToSpeech

        tts = TextToSpeech(noise_scale=0, noise_w=0)
        parts, total, i = [], 0.0, 0
        while total < seconds:
            said = tts.synthesize(PHRASES[i % len(PHRASES)]).to(SR)
            parts += [said.samples, np.zeros(int(0.8 * SR), np.float32)]
            total += said.duration + 0.8
            i += 1
        return Audio(np.concatenate(parts)[: int(seconds * SR)], SR), "synthesized speech + pauses"
    except Exception as exc:  # no voice or phonemizer: noise still exercises every code path
        rng = np.random.default_rng(0)
        n = int(seconds * SR)
        spec = np.fft.rfft(rng.standard_normal(n))
        spec[1:] /= np.sqrt(np.fft.rfftfreq(n)[1:])
        x = np.fft.irfft(spec, n)
        return Audio((x / np.abs(x).max() * 0.1).astype(np.float32), SR), f"pink noise ({type(exc).__name__}: no TTS)"


def timed_rtf(feed, reset, samples: np.ndarray, chunk: int, repeats: int) -> float:
    """Median compute seconds / audio seconds of feeding ``samples`` in ``chunk``-sample pieces
    from a fresh stream (the reset is timed too: under 1 ms, against tens of ms per pass)."""

    def one_pass():
        reset()
        for i in range(0, samples.size, chunk):
            feed(samples[i : i + chunk])

    return _median_round(one_pass, repeats) / (samples.size / SR)


def micro_features_stage(samples: np.ndarray, chunk: int, repeats: int) -> float:
    from pymicro_features import MicroFrontend

    fe = MicroFrontend()
    pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)

    def feed(piece):
        for j in range(0, piece.size - 159, 160):
            fe.process_samples(piece[j : j + 160].tobytes())

    return timed_rtf(feed, fe.reset, pcm, chunk - chunk % 160 or 160, repeats)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--chunk-ms", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    audio, source = test_stream(args.seconds)
    x, chunk = audio.samples, args.chunk_ms * SR // 1000
    rows = []

    ww = WakeWordDetector("okay-nabu")
    hits = ww.detect(audio)
    rows.append(("wake word okay-nabu", timed_rtf(ww.process, ww.reset, x, chunk, args.repeats), ww.session.placement.device.id, f"{len(hits)} detections"))
    rows.append(("  micro features only", micro_features_stage(x, chunk, args.repeats), "cpu (pymicro-features)", ""))
    for threads in (1, 2):
        vad = VoiceActivityDetector(threads=threads)
        segs = vad.segments(audio)
        rows.append(
            (
                f"VAD silero threads={threads}",
                timed_rtf(vad.process, vad.reset, x, chunk, args.repeats),
                vad.session.placement.device.id,
                f"{len(segs)} segments",
            )
        )

    print(
        f"# {platform.processor() or platform.machine()}, python {sys.version.split()[0]}; "
        f"{audio.duration:.1f} s of {source}, {args.chunk_ms} ms chunks, median of {args.repeats}"
    )
    print("| stage | audio s | compute s | RTF | placement | result |\n|---|---|---|---|---|---|")
    for stage, rtf, placement, note in rows:
        print(f"| {stage} | {audio.duration:.1f} | {rtf * audio.duration:.3f} | {rtf:.4f} | {placement} | {note} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump([dict(stage=s.strip(), audio_s=audio.duration, rtf=r, placement=p, result=n) for s, r, p, n in rows], f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
