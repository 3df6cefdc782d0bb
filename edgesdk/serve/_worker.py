"""One worker thread runs the Session's generations in turn; requests wait in a bounded queue.

The engine is synchronous (it releases the GIL in C), so it runs here and never on the event loop.
A job hands its results to the loop through an ``asyncio.Queue`` fed with ``call_soon_threadsafe``:
text pieces (str) when streaming, then exactly one :class:`Outcome` or :class:`Failure`.
Cancelling a job (client gone, server stopping) frees its queue slot at once if it has not
started, else closes the engine's stream at its next piece, which cancels it in the engine.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from typing import Any

import attrs

from .._errors import ContextLengthError
from ._responses import ApiError, Outcome, ServerShuttingDown

__all__ = ["Failure", "GenerationQueue", "Job"]

log = logging.getLogger("edgesdk.serve")


@attrs.frozen
class Failure:
    error: BaseException


class Job:
    """One request's generation; ``events`` is read on the event loop that submitted it."""

    def __init__(self, owner: GenerationQueue, prompt: Any, options: dict, stream: bool, fit: bool = False):
        self.prompt, self.options, self.stream = prompt, options, stream
        self.fit = fit  # max_tokens is the server's default: shrink it to what the context has room for
        self.events: asyncio.Queue = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._owner = owner
        self._cancelled = threading.Event()
        self._error: BaseException | None = None  # why it was cancelled, for a client still waiting
        self.started = False  # set by the worker, under the owner's lock
        self.released = False  # its slot in the queue was given back

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self, error: BaseException | None = None) -> None:
        """Stop this job (idempotent): a queued one never starts, a running one stops at its next piece.

        ``error`` is what a client still waiting gets (None: nobody is waiting).
        """
        self._owner._cancel(self, error)

    def emit(self, item) -> None:
        """Hand ``item`` to the event loop (from the worker thread)."""
        try:
            self._loop.call_soon_threadsafe(self.events.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            self.cancel()

    def cancellation(self) -> Failure | None:
        """The last event of a cancelled job: the reason, for a client still waiting (None: nobody is)."""
        return Failure(self._error) if self._error is not None else None


class GenerationQueue:
    """Admits at most ``max_waiting`` jobs behind the running one and runs them one at a time.

    ``counters`` (submitted, completed, cancelled, failed, rejected) make the server observable:
    ``GET /health`` reports them.
    """

    def __init__(self, session, max_waiting: int = 16):
        if isinstance(max_waiting, bool) or not isinstance(max_waiting, int) or max_waiting < 0:
            raise ValueError(f"max_waiting must be an int >= 0, got {max_waiting!r}")
        self._session = session
        self.capacity = max_waiting + 1
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._live: set[Job] = set()  # admitted and not yet finished
        self._closed = False
        self._mean_s = 1.0  # running mean of a job's duration, for Retry-After
        self.counters = dict.fromkeys(("submitted", "completed", "cancelled", "failed", "rejected"), 0)
        self._thread = threading.Thread(target=self._work, name="edgesdk-serve-generate", daemon=True)
        self._thread.start()

    # --- event-loop side ------------------------------------------------------------------------

    def submit(self, prompt: Any, options: dict, stream: bool, fit: bool = False) -> Job:
        """Queue a generation; 429 with ``Retry-After`` when full, 503 once the server is stopping."""
        with self._lock:
            if self._closed:
                raise ApiError(503, "the server is shutting down", "server_error", code="server_shutting_down")
            if len(self._live) >= self.capacity:
                self.counters["rejected"] += 1
                wait = max(1, min(60, math.ceil(self._mean_s * len(self._live))))
                raise ApiError(
                    429,
                    f"the server is busy: {len(self._live)} request(s) in progress or waiting (capacity {self.capacity}); retry in about {wait} s",
                    "rate_limit_error",
                    code="queue_full",
                    headers={"Retry-After": str(wait)},
                )
            job = Job(self, prompt, options, stream, fit)
            self._live.add(job)
            self.counters["submitted"] += 1
        self._jobs.put(job)
        return job

    def status(self) -> dict:
        with self._lock:
            running = sum(j.started for j in self._live)
            return {"running": running, "waiting": len(self._live) - running, "capacity": self.capacity, **self.counters}

    def cancel_all(self) -> None:
        """Cancel every queued and running job; their clients get 503 (or an error event mid-stream)."""
        with self._lock:
            live = list(self._live)
        for job in live:
            job.cancel(ServerShuttingDown("the server is shutting down; the generation was cancelled"))

    def close(self, timeout: float | None = None) -> bool:
        """Cancel every job and stop the worker; True once it has stopped (it finishes its current piece first)."""
        with self._lock:
            first = not self._closed
            self._closed = True
        if first:
            self.cancel_all()
            self._jobs.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- bookkeeping shared by both sides -------------------------------------------------------

    def _cancel(self, job: Job, error: BaseException | None) -> None:
        with self._lock:
            if job.cancelled:
                return
            job._error = error
            job._cancelled.set()
            if job.started:
                return  # the worker notices at its next piece, and counts it
            self._release_locked(job)
            self.counters["cancelled"] += 1
        if (last := job.cancellation()) is not None:
            job.emit(last)

    def _release_locked(self, job: Job) -> None:
        job.released = True
        self._live.discard(job)

    # --- worker side ----------------------------------------------------------------------------

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            with self._lock:
                if job.released:  # cancelled while it waited
                    continue
                job.started = True
            t0 = time.perf_counter()
            try:
                result, last = self._run(job)
            except BaseException as exc:  # the worker must outlive any request
                log.exception("generation failed")
                result, last = "failed", Failure(exc)
            # Counted before the client can see its answer, so counters never lag behind what clients saw.
            with self._lock:
                self._release_locked(job)
                self.counters[result] += 1
                self._mean_s += 0.25 * (time.perf_counter() - t0 - self._mean_s)
            if last is not None:
                job.emit(last)

    def _run(self, job: Job) -> tuple[str, Outcome | Failure | None]:
        """Generate ``job``, streaming its pieces; (the counter it ends in, its last event)."""
        if job.cancelled:  # between leaving the queue and starting
            return "cancelled", job.cancellation()
        try:
            stream = self._start(job)
        except Exception as exc:  # noqa: BLE001 -- validation errors go back to the client
            return "failed", Failure(exc)
        pieces = []
        try:
            for piece in stream:
                if job.cancelled:
                    break
                pieces.append(piece)
                if job.stream:
                    job.emit(piece)
        except Exception as exc:  # noqa: BLE001 -- e.g. StructuredOutputError: an error answer, not a dead server
            return "failed", Failure(exc)
        finally:
            stream.close()  # cancels the generation in the engine when it did not run to its end
        if job.cancelled:
            return "cancelled", job.cancellation()
        return "completed", self._outcome(stream, pieces)

    def _start(self, job: Job):
        try:
            return self._session.generate_stream(job.prompt, **job.options)
        except ContextLengthError as exc:
            if not (job.fit and exc.room):
                raise
            # A request that set no max_tokens gets what fits, as OpenAI's API does.
            return self._session.generate_stream(job.prompt, **{**job.options, "max_tokens": exc.room})

    def _outcome(self, stream, pieces: list[str]) -> Outcome:
        reply = getattr(stream, "reply", None)
        # Only this thread generates on the Session, so the runner's last stats are this stream's.
        stats = getattr(stream, "stats", None) or self._session.runner.last_stats
        return Outcome(
            text=str.__str__(reply) if reply is not None else "".join(pieces),
            tool_calls=tuple(getattr(reply, "tool_calls", None) or ()),
            stop_reason=getattr(reply, "stop_reason", None) or stats.stop_reason,
            prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.generated_tokens,
            cached_tokens=stats.cached_tokens,
        )
