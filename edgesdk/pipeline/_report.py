"""What a pipeline run cost: per-stage latency, real-time factor and placement, per-turn response time."""

from __future__ import annotations

import threading
from typing import Mapping

import attrs
import numpy as np

__all__ = ["StageReport", "TurnReport", "PipelineReport"]


class _StageClock:
    """Busy time per input item of one stage (written by its thread only)."""

    def __init__(self):
        self.latencies: list[float] = []
        self.audio_seconds = 0.0
        self.flush_seconds = 0.0  # end-of-stream work, busy time but no input's latency
        self._lock = threading.Lock()

    def record(self, seconds: float, per_input: bool = True) -> None:
        with self._lock:
            if per_input:
                self.latencies.append(seconds)
            else:
                self.flush_seconds += seconds


def _pct(values, q) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


@attrs.frozen
class StageReport:
    """One stage: where its sessions run, how long each input took, its real-time factor."""

    name: str
    placement: Mapping[str, str]  # session name -> "device id [kind]" (+ " simulated")
    calls: int
    busy_s: float
    p50_s: float | None
    p90_s: float | None
    max_s: float | None
    audio_s: float
    memory_bytes: int  # what the pipeline budget charged: model files, or the stage's declared size
    rss_growth_bytes: int  # process RSS growth while the stage was built (includes runtimes loaded first here)

    @property
    def rtf(self) -> float | None:
        """Compute seconds per second of audio (< 1 keeps up with real time); None for non-audio stages."""
        return self.busy_s / self.audio_s if self.audio_s > 0 else None

    @classmethod
    def from_clock(cls, name: str, clock: _StageClock, placements: Mapping, memory: int, rss_growth: int) -> "StageReport":
        lat = list(clock.latencies)
        where = {k: f"{p.device.id} [{p.device.kind}]" + (" simulated" if p.device.simulated else "") for k, p in placements.items()}
        return cls(
            name,
            where,
            len(lat),
            float(sum(lat)) + clock.flush_seconds,
            _pct(lat, 50),
            _pct(lat, 90),
            max(lat) if lat else None,
            clock.audio_seconds,
            memory,
            rss_growth,
        )


@attrs.frozen
class TurnReport:
    """One request: from its first event (e.g. end of speech) to the first and last output."""

    turn: int
    started_by: str
    first_output_s: float | None  # None: no output (cancelled before answering, or nothing to say)
    last_output_s: float | None
    outputs: int
    cancelled: bool


@attrs.frozen
class PipelineReport:
    stages: tuple[StageReport, ...]
    turns: tuple[TurnReport, ...]
    memory_budget_mb: float | None
    peak_rss_bytes: int | None

    @property
    def memory_bytes(self) -> int:
        return sum(s.memory_bytes for s in self.stages)

    def stage(self, name: str) -> StageReport:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage {name!r}; stages: {', '.join(s.name for s in self.stages)}")

    @classmethod
    def build(cls, stages, events, budget, peak) -> "PipelineReport":
        by_turn: dict[int, list] = {}
        for ev in events:
            if ev.turn > 0:
                by_turn.setdefault(ev.turn, []).append(ev)
        turns = []
        for t, evs in sorted(by_turn.items()):
            t0 = evs[0].time
            outs = [e.time for e in evs if e.kind == "output"]
            turns.append(
                TurnReport(t, evs[0].kind, outs[0] - t0 if outs else None, outs[-1] - t0 if outs else None, len(outs), any(e.kind == "cancelled" for e in evs))
            )
        return cls(tuple(stages), tuple(turns), budget, peak)

    def __str__(self) -> str:
        def ms(v):
            return "-" if v is None else f"{v * 1000:.1f}"

        rows = [("stage", "placement", "calls", "p50 ms", "p90 ms", "busy s", "audio s", "RTF", "MiB")]
        for s in self.stages:
            rows.append(
                (
                    s.name,
                    ", ".join(f"{k}={v}" for k, v in s.placement.items()) or "-",
                    str(s.calls),
                    ms(s.p50_s),
                    ms(s.p90_s),
                    f"{s.busy_s:.3f}",
                    f"{s.audio_s:.2f}" if s.audio_s else "-",
                    f"{s.rtf:.3f}" if s.rtf is not None else "-",
                    f"{s.memory_bytes / 2**20:.1f}",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        for t in self.turns:
            state = "cancelled" if t.cancelled else "done"
            lines.append(
                f"turn {t.turn} ({t.started_by}): first output after {ms(t.first_output_s)} ms, last after {ms(t.last_output_s)} ms, "
                f"{t.outputs} output(s), {state}"
            )
        budget = f" of {self.memory_budget_mb:g} MiB budget" if self.memory_budget_mb else ""
        peak = f", peak RSS {self.peak_rss_bytes / 2**20:.0f} MiB" if self.peak_rss_bytes else ""
        lines.append(f"memory: stages {self.memory_bytes / 2**20:.1f} MiB{budget}{peak}")
        return "\n".join(lines)
