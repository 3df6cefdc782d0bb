"""Pipelines: named stages, each in its own thread, linked by bounded queues.

Every value travels with the *turn* it belongs to (one user request: an utterance and its answer).
Turn 0 is the always-on input stream; a stage that recognises a new request (the VAD closing an
utterance) opens a new turn, and a barge-in cancels the turns still in flight. Cancelling a turn
closes the generator that is producing its values, so an LLM stops decoding mid-answer and the
stages downstream drop what was queued for it.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import attrs

from .._errors import EdgeSDKError, PipelineError, PlacementError
from .._options import SessionOptions
from .._plan import Placement
from ._report import PipelineReport, StageReport, _StageClock

__all__ = ["Stage", "FunctionStage", "StageSpec", "StageContext", "Pipeline", "Event"]

log = logging.getLogger("edgesdk.pipeline")

_END = object()  # end of stream, passed down the queues after each stage flushed


@attrs.frozen
class _TurnEnd:
    """Follows the last value of a turn down the queues."""

    turn: int


class Stage:
    """One step of a pipeline. Subclasses set ``name`` and implement :meth:`process`.

    ``process(value, ctx)`` returns an iterable of outputs for one input (a generator streams them);
    :meth:`end_turn` what is left of a turn once all its values arrived; :meth:`flush` what is
    left at the end of the stream. ``sessions`` names the edgesdk
    sessions the stage runs, so the pipeline can report where each ran.
    """

    name: str = ""

    @property
    def sessions(self) -> Mapping[str, Any]:
        return {}

    def process(self, value, ctx: "StageContext") -> Iterable[Any]:
        raise NotImplementedError

    def flush(self, ctx: "StageContext") -> Iterable[Any]:
        return ()

    def warmup(self) -> None:
        """Run the stage's models once (first calls allocate and compile); state is reset after."""

    def end_turn(self, ctx: "StageContext") -> Iterable[Any]:
        """Called once all of turn ``ctx.turn``'s values reached this stage (e.g. speak the last words)."""
        return ()

    def close(self) -> None:
        for s in self.sessions.values():
            s.close()


class FunctionStage(Stage):
    """A stage from a function of one value; a generator function streams its outputs."""

    def __init__(self, name: str, fn: Callable[[Any], Any], sessions: Mapping[str, Any] | None = None):
        if not callable(fn):
            raise PipelineError(name, f"fn must be callable, got {type(fn).__name__}")
        self.name = name
        self._fn = fn
        self._sessions = dict(sessions or {})

    @property
    def sessions(self):
        return self._sessions

    def process(self, value, ctx):
        out = self._fn(value)
        return out if isinstance(out, Iterator) else (out,)


def _name(instance, attribute, value):
    if not isinstance(value, str) or not value.strip():
        raise PipelineError(repr(value), "a stage name must be a non-empty string")


@attrs.frozen
class StageSpec:
    """A stage built by the pipeline, so placement can account for the stages placed before it.

    ``build(options)`` returns the :class:`Stage`; it must pass ``options`` to every Session it
    opens. ``prefer``/``require`` override the pipeline's options for this stage; ``memory_mb``
    overrides the measured footprint used for the pipeline's memory budget.
    """

    name: str = attrs.field(validator=_name)
    build: Callable[[SessionOptions], Stage]
    prefer: tuple[str, ...] | None = None
    require: str | None = None
    memory_mb: float | None = None


@attrs.frozen
class Event:
    """Something a pipeline run produced: ``kind`` "output" for the last stage's values, or a
    stage's notice ("wake", "speech_end", "transcript", "token", "cancelled", ...)."""

    stage: str
    kind: str
    turn: int
    value: Any
    time: float  # time.perf_counter() when it happened


class StageContext:
    """What a stage's ``process`` may do besides returning outputs."""

    def __init__(self, pipeline: "Pipeline", stage: str, clock: _StageClock):
        self._pipeline = pipeline
        self.stage = stage
        self._clock = clock
        self.turn = 0
        self._opened: list[int] = []

    def add_audio(self, seconds: float) -> None:
        """Count audio this stage consumed (or produced, for a synthesiser) towards its real-time factor."""
        self._clock.audio_seconds += float(seconds)

    def emit(self, kind: str, value: Any = None, at: float | None = None) -> None:
        """Publish a notice for the app (and the report) in the current turn; ``at`` backdates it
        (a ``time.perf_counter()`` value, e.g. when the audio that caused it arrived)."""
        self._pipeline._publish(Event(self.stage, kind, self.turn, value, time.perf_counter() if at is None else at))

    def new_turn(self) -> int:
        """Open a new turn; the outputs that follow belong to it. It ends when this input is done."""
        self.turn = self._pipeline._open_turn()
        self._opened.append(self.turn)
        return self.turn

    def barge_in(self) -> list[int]:
        """Cancel every turn still in flight (the user spoke over the answer); returns their ids."""
        return self._pipeline.cancel()

    @property
    def cancelled(self) -> bool:
        return self._pipeline._is_cancelled(self.turn)


class Pipeline:
    """Stages run concurrently, each on its own placement, streaming values from one to the next.

    ``stages`` are :class:`Stage` objects or :class:`StageSpec` recipes. Specs are built in order
    with options derived from ``options`` (``SessionOptions`` for every stage) and the remaining
    ``memory_budget_mb``: a stage that no longer fits is refused with the reason, and a device whose
    reported memory the stages before it already hold is avoided, so the stage is placed elsewhere.
    """

    def __init__(
        self, stages: Sequence[Stage | StageSpec], *, options: SessionOptions | None = None, memory_budget_mb: float | None = None, queue_size: int = 16
    ):
        if options is not None and not isinstance(options, SessionOptions):
            raise TypeError(f"options must be an edgesdk.SessionOptions, got {type(options).__name__}")
        if memory_budget_mb is not None and (isinstance(memory_budget_mb, bool) or not isinstance(memory_budget_mb, (int, float)) or memory_budget_mb <= 0):
            raise ValueError(f"memory_budget_mb must be a positive number or None, got {memory_budget_mb!r}")
        if not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f"queue_size must be a positive int, got {queue_size!r}")
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        self.options = options or SessionOptions()
        self.memory_budget_mb = memory_budget_mb
        self._queue_size = queue_size
        self._lock = threading.Lock()
        self._turns = 0
        self._cancelled: set[int] = set()
        self._done: set[int] = set()
        self._events: queue.Queue | None = None
        self.stages: list[Stage] = []
        self._memory: dict[str, int] = {}
        self._rss_growth: dict[str, int] = {}
        self._clocks: dict[str, _StageClock] = {}
        self._history: list[Event] = []
        try:
            for s in stages:
                self._add(s)
        except BaseException:
            self.close()
            raise

    # -- building ---------------------------------------------------------------------------------

    def _held_devices(self) -> dict[str, tuple[Any, set[str]]]:
        """Device id -> (the device, names of the stages with a session on it)."""
        held: dict[str, tuple[Any, set[str]]] = {}
        for st in self.stages:
            for sess in st.sessions.values():
                dev = sess.placement.device
                held.setdefault(dev.id, (dev, set()))[1].add(st.name)
        return held

    def _add(self, s: Stage | StageSpec) -> None:
        if not isinstance(s, (Stage, StageSpec)):
            raise PipelineError(str(getattr(s, "name", s)), f"expected a Stage or StageSpec, got {type(s).__name__}")
        name = s.name
        if not isinstance(name, str) or not name:
            raise PipelineError(repr(name), "a stage name must be a non-empty string")
        if any(st.name == name for st in self.stages):
            raise PipelineError(name, "duplicate stage name")
        rss0 = _rss()
        stage = s if isinstance(s, Stage) else self._build(s)
        self._memory[name] = _footprint(stage, getattr(s, "memory_mb", None))
        self._rss_growth[name] = max(0, _rss() - rss0)
        self.stages.append(stage)
        self._clocks[name] = _StageClock()
        if self.memory_budget_mb is not None and sum(self._memory.values()) > self.memory_budget_mb * 2**20:
            raise PipelineError(
                name,
                f"needs {self._memory[name] / 2**20:.1f} MiB but only "
                f"{self._remaining_mb(exclude=name):.1f} MiB of the {self.memory_budget_mb:g} MiB pipeline budget is left "
                f"({self._budget_holders(exclude=name)})",
            )

    def _remaining_mb(self, exclude: str | None = None) -> float:
        used = sum(v for k, v in self._memory.items() if k != exclude)
        return self.memory_budget_mb - used / 2**20

    def _budget_holders(self, exclude: str | None = None) -> str:
        held = [f"{k} {v / 2**20:.1f} MiB" for k, v in self._memory.items() if k != exclude]
        return "held by " + ", ".join(held) if held else "nothing held yet"

    def _build(self, spec: StageSpec) -> Stage:
        overrides: dict[str, Any] = {}
        if spec.prefer is not None:
            overrides["prefer"] = spec.prefer
        if spec.require is not None:
            overrides["require"] = spec.require
        if self.memory_budget_mb is not None:
            left = self._remaining_mb()
            if left < 1:
                raise PipelineError(spec.name, f"no memory left in the {self.memory_budget_mb:g} MiB pipeline budget ({self._budget_holders()})")
            overrides["memory_budget_mb"] = int(left)
        avoid = dict(self.options.avoid)
        for dev_id, (dev, holders) in self._held_devices().items():
            if dev.memory_bytes is not None and sum(self._memory[h] for h in holders) >= dev.memory_bytes:
                avoid[dev_id] = f"its {dev.memory_bytes / 2**20:.0f} MiB are held by pipeline stage(s) {', '.join(sorted(holders))}"
        overrides["avoid"] = avoid
        opts = attrs.evolve(self.options, **overrides)
        try:
            stage = spec.build(opts)
        except PlacementError as exc:
            raise PipelineError(spec.name, f"cannot be placed: {exc}") from exc
        except EdgeSDKError as exc:
            raise PipelineError(spec.name, f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(stage, Stage):
            raise PipelineError(spec.name, f"build returned {type(stage).__name__}, not a Stage")
        stage.name = spec.name
        return stage

    def warmup(self) -> None:
        """Warm every stage up, so the first request's latency is a steady-state one."""
        for st in self.stages:
            try:
                st.warmup()
            except Exception as exc:
                raise PipelineError(st.name, f"warm-up failed: {type(exc).__name__}: {exc}") from exc

    # -- turns and cancellation -------------------------------------------------------------------

    def _open_turn(self) -> int:
        with self._lock:
            self._turns += 1
            return self._turns

    def _is_cancelled(self, turn: int) -> bool:
        return turn in self._cancelled

    def cancel(self, turn: int | None = None) -> list[int]:
        """Cancel one turn, or every turn still in flight (barge-in). Turn 0, the input stream, goes on."""
        with self._lock:
            turns = [turn] if turn is not None else list(range(1, self._turns + 1))
            turns = [t for t in turns if t and t not in self._cancelled and t not in self._done]
            self._cancelled.update(turns)
        for t in turns:
            self._publish(Event("pipeline", "cancelled", t, None, time.perf_counter()))
        return turns

    def _publish(self, ev: Event) -> None:
        with self._lock:
            self._history.append(ev)
        q = self._events
        if q is not None:
            q.put(ev)

    # -- running ----------------------------------------------------------------------------------

    def run(self, source: Iterable[Any]) -> Iterator[Event]:
        """Stream ``source`` through the stages; yields every :class:`Event` as it happens.

        Values of the last stage arrive as ``kind == "output"``. Closing the iterator early stops
        every stage. A stage that raises stops the run with a :class:`PipelineError` naming it.
        """
        if self._events is not None:
            raise PipelineError("pipeline", "already running")
        self._events = events = queue.Queue()
        stop = threading.Event()
        queues = [queue.Queue(self._queue_size) for _ in self.stages]
        failures: list[PipelineError] = []
        threads = [threading.Thread(target=self._feed, args=(source, queues[0], stop, failures), name="pipeline-source", daemon=True)]
        for i, st in enumerate(self.stages):
            out = queues[i + 1] if i + 1 < len(self.stages) else None
            threads.append(threading.Thread(target=self._work, args=(st, queues[i], out, stop, failures), name=f"pipeline-{st.name}", daemon=True))
        for t in threads:
            t.start()
        try:
            while True:
                ev = events.get()
                if ev is _END:
                    break
                yield ev
            if failures:
                raise failures[0]
        finally:
            stop.set()
            for t in threads[1:]:
                t.join(timeout=30)
            # The source may be blocked reading a microphone: a daemon thread that ends at its next
            # value, so it gets only a moment.
            threads[0].join(timeout=1.0)
            self._events = None

    def _feed(self, source, q, stop, failures):
        try:
            for value in source:
                if stop.is_set() or not _put(q, (0, value), stop):
                    return
        except Exception as exc:
            failures.append(PipelineError("source", f"{type(exc).__name__}: {exc}"))
            self.cancel()
        finally:
            _put(q, _END, stop, force=True)

    def _work(self, stage: Stage, q_in, q_out, stop, failures):
        clock = self._clocks[stage.name]
        ctx = StageContext(self, stage.name, clock)
        try:
            while not stop.is_set():
                try:
                    item = q_in.get(timeout=0.1)  # wake up now and then to notice a stop
                except queue.Empty:
                    continue
                if item is _END:
                    self._drain(stage, ctx, clock, False, stage.flush(ctx), q_out, stop)
                    break
                if isinstance(item, _TurnEnd):
                    self._end_turn(stage, ctx, clock, item.turn, q_out, stop)
                    continue
                turn, value = item
                if self._is_cancelled(turn):
                    continue
                ctx.turn = turn
                ctx._opened = []
                self._drain(stage, ctx, clock, True, stage.process(value, ctx), q_out, stop)
                for t in ctx._opened:
                    self._end_turn(stage, None, clock, t, q_out, stop)
        except Exception as exc:
            log.exception("pipeline stage %s failed", stage.name)
            failures.append(PipelineError(stage.name, f"{type(exc).__name__}: {exc}"))
            stop.set()
        finally:
            if q_out is not None:
                _put(q_out, _END, stop, force=True)
            elif self._events is not None:
                self._events.put(_END)

    def _end_turn(self, stage, ctx, clock, turn, q_out, stop):
        """Let ``stage`` finish ``turn`` (unless this stage opened it) and pass the end downstream."""
        if ctx is not None and not self._is_cancelled(turn):
            ctx.turn = turn
            self._drain(stage, ctx, clock, False, stage.end_turn(ctx), q_out, stop)
        if q_out is not None:
            _put(q_out, _TurnEnd(turn), stop)
        else:
            with self._lock:
                self._done.add(turn)
            if not self._is_cancelled(turn):
                self._publish(Event(stage.name, "turn_end", turn, None, time.perf_counter()))

    def _drain(self, stage, ctx, clock, per_input: bool, outputs, q_out, stop):
        """Pull outputs of one input, timing only the stage's own work, and pass them on."""
        busy = 0.0
        it = iter(outputs)
        try:
            while not stop.is_set():
                if ctx.cancelled:
                    break
                t0 = time.perf_counter()
                try:
                    out = next(it)
                except StopIteration:
                    busy += time.perf_counter() - t0
                    break
                busy += time.perf_counter() - t0
                if ctx.cancelled:
                    break
                if q_out is None:
                    self._publish(Event(stage.name, "output", ctx.turn, out, time.perf_counter()))
                elif not _put(q_out, (ctx.turn, out), stop):
                    break
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # a cancelled generator (an LLM stream) stops here
        clock.record(busy, per_input)

    # -- reporting --------------------------------------------------------------------------------

    @property
    def placements(self) -> dict[str, dict[str, Placement]]:
        """Stage name -> session name -> where it runs."""
        return {st.name: {k: s.placement for k, s in st.sessions.items()} for st in self.stages}

    @property
    def events(self) -> list[Event]:
        """Every event published so far (the report is computed from these)."""
        with self._lock:
            return list(self._history)

    def report(self) -> PipelineReport:
        stages = tuple(
            StageReport.from_clock(st.name, self._clocks[st.name], self.placements[st.name], self._memory[st.name], self._rss_growth[st.name])
            for st in self.stages
        )
        return PipelineReport.build(stages, self.events, self.memory_budget_mb, _rss_peak())

    def close(self) -> None:
        for st in self.stages:
            try:
                st.close()
            except Exception:  # closing must release every stage even if one misbehaves
                log.exception("closing pipeline stage %s", st.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _put(q: queue.Queue, item, stop: threading.Event, force: bool = False) -> bool:
    """Put with back-pressure that still notices a stop; ``force`` drops the oldest item to make room."""
    while True:
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            if force and stop.is_set():
                try:
                    q.get_nowait()
                except queue.Empty:
                    pass
            elif stop.is_set():
                return False


def _footprint(stage: Stage, override_mb: float | None) -> int:
    """Bytes a stage holds for the budget: its model files (weights stay resident), unless overridden.

    Deterministic on purpose: RSS growth while building also counts runtime libraries loaded once
    for the whole process, which would charge whichever stage happened to load them first.
    """
    if override_mb is not None:
        return int(override_mb * 2**20)
    return sum(getattr(getattr(s, "model", None), "size", 0) or 0 for s in stage.sessions.values())


def _rss() -> int:
    try:
        import psutil

        return int(psutil.Process(os.getpid()).memory_info().rss)
    except Exception:
        return 0


def _rss_peak() -> int | None:
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux
    except Exception:
        return None
