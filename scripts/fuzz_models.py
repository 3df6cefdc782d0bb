#!/usr/bin/env python
"""Open mutants of every hub model in child processes: every failure must be a typed edgesdk error.

Each mutant (a truncation, bit flips, a byte run, a huge count/offset written over a field) is
opened with ``edgesdk.Session(path)`` in a worker process that outlives many mutants; a worker that
dies by a signal is a *crash*, one that does not answer within ``--timeout`` is a *hang*, an
exception that is not an ``EdgeSDKError`` is *untyped*, and a typed error whose text names a bare
Python exception (``IndexError``, ``struct.error``, ...) is *raw* (the cause was not said in words).

Mutants are cheap whatever the model's size: bytes are patched into a per-job copy of the file and
restored afterwards, and for GGUF files flips land in the header, metadata and tensor-info table
(the tensor data is kept as it is). Exit status 1 if any crash, hang, untyped or raw outcome.

    python scripts/fuzz_models.py --mutants 100 --jobs 2
    python scripts/fuzz_models.py --models smollm2-135m=40 silero-vad --seed 3 --keep /tmp/bad
"""

from __future__ import annotations

import argparse
import builtins
import json
import os
import queue
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

OUTCOMES = ("typed", "ok", "crash", "hang", "untyped", "raw")
BAD = ("crash", "hang", "untyped", "raw")
_BUILTIN_ERRORS = sorted(n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException))
# A bare exception name in a message means a cause was passed through instead of said in words.
_RAW = re.compile(r"\b(?:%s|struct\.error|DecodeError)\b" % "|".join(_BUILTIN_ERRORS))
_HUGE = (2**64 - 1, 2**63, 2**32 - 1, 2**31 - 1, 2**31, 2**40)


# -- mutants --------------------------------------------------------------------------------------


@dataclass
class Mutant:
    desc: str
    patches: list[tuple[int, bytes]] = field(default_factory=list)  # (offset, bytes written there)
    truncate: int | None = None
    xor: bool = False  # patches are bit masks XORed into the original bytes

    def patched(self, original: bytes, patch: bytes) -> bytes:
        return bytes(a ^ b for a, b in zip(original, patch)) if self.xor else patch


@dataclass
class Target:
    name: str
    path: str
    fmt: str
    size: int
    regions: dict[str, tuple[int, int]]  # region name -> [start, end) worth mutating


def target(name: str) -> Target | None:
    from edgesdk import hub
    from edgesdk._modelfile import open_model

    p = str(hub.path(name))
    if os.path.isdir(p):
        return None  # a plugin's model directory (CTranslate2), not a file edgesdk parses
    m = open_model(p)
    return Target(name, p, m.format, m.size, _regions(p, m.format, m.size))


def _regions(path: str, fmt: str, size: int) -> dict[str, tuple[int, int]]:
    if fmt != "gguf":
        return {"file": (0, size)}
    from edgesdk.llm._gguf import GGUFFile

    f = GGUFFile(path)
    regions = {"header": (0, 24), "metadata": (24, f.tensor_info_offset), "tensor-infos": (f.tensor_info_offset, f.data_offset), "data": (f.data_offset, size)}
    f.close()
    return regions


def mutant(t: Target, rng: random.Random) -> Mutant:
    """One random mutant of ``t``; GGUF data is only ever truncated, never patched."""
    patchable = {k: v for k, v in t.regions.items() if k != "data" and v[1] > v[0]}
    region = rng.choice(sorted(patchable))
    lo, hi = patchable[region]
    kind = rng.choice(("truncate", "flip", "flip", "bytes", "huge", "zero-run"))
    if kind == "truncate":
        lo, hi = t.regions[rng.choice(sorted(t.regions))]
        n = rng.randrange(lo, hi)
        return Mutant(f"truncate to {n} bytes ({_region_of(t, n)})", truncate=n)
    if kind == "huge":
        at, width = rng.randrange(lo, max(lo + 1, hi - 8)), rng.choice((4, 8))
        v = rng.choice(_HUGE) & (2 ** (8 * width) - 1)
        return Mutant(f"u{8 * width} {v:#x} at {at} ({region})", [(at, v.to_bytes(width, "little"))])
    if kind == "zero-run":
        at = rng.randrange(lo, hi)
        return Mutant(f"64 zero bytes at {at} ({region})", [(at, bytes(min(64, t.size - at)))])
    patches = []
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(lo, hi)
        patches.append((at, bytes([rng.randrange(256) if kind == "bytes" else (1 << rng.randrange(8))])))
    if kind == "flip":
        return Mutant(f"{len(patches)} bit flip(s) in {region} at {[a for a, _ in patches]}", patches, xor=True)
    return Mutant(f"{len(patches)} random byte(s) in {region} at {[a for a, _ in patches]}", patches)


def _region_of(t: Target, n: int) -> str:
    return next((k for k, (lo, hi) in t.regions.items() if lo <= n < hi), "end")


class Workfile:
    """A job's private copy of a model: a mutant is patched in and restored afterwards."""

    def __init__(self, t: Target, directory: str):
        self.t = t
        self.path = os.path.join(directory, os.path.basename(t.path))
        shutil.copyfile(t.path, self.path)
        self.trunc_path = self.path + ".trunc" + os.path.splitext(t.path)[1]

    def apply(self, m: Mutant) -> tuple[str, list[tuple[int, bytes]]]:
        """Write the mutant; returns its path and what to :meth:`restore`."""
        if m.truncate is not None:
            with open(self.t.path, "rb") as src, open(self.trunc_path, "wb") as dst:
                shutil.copyfileobj(_Limited(src, m.truncate), dst, 1 << 20)
            return self.trunc_path, []
        undo = []
        with open(self.path, "r+b") as f:
            for at, patch in m.patches:  # in order: a later patch may overlap an earlier one
                original = os.pread(f.fileno(), len(patch), at)
                undo.append((at, original))
                os.pwrite(f.fileno(), m.patched(original, patch), at)
        return self.path, undo

    def restore(self, undo) -> None:
        with open(self.path, "r+b") as f:
            for at, data in reversed(undo):
                os.pwrite(f.fileno(), data, at)

    def mutated_bytes(self, m: Mutant) -> bytes:
        """The whole mutant, for ``--keep``."""
        with open(self.t.path, "rb") as f:
            data = bytearray(f.read() if m.truncate is None else f.read(m.truncate))
        for at, patch in m.patches:
            data[at : at + len(patch)] = m.patched(bytes(data[at : at + len(patch)]), patch)
        return bytes(data)


class _Limited:
    def __init__(self, f, n):
        self.f, self.left = f, n

    def read(self, size=-1):
        size = self.left if size < 0 else min(size, self.left)
        data = self.f.read(size)
        self.left -= len(data)
        return data


# -- worker processes -----------------------------------------------------------------------------


def worker_main() -> None:
    """Child side: read a path per line, open it, answer one JSON line per path."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # library or native prints must not corrupt the protocol
    import edgesdk

    for line in sys.stdin:
        path = line.rstrip("\n")
        try:
            edgesdk.Session(path).close()
            answer = {"outcome": "ok"}
        except edgesdk.EdgeSDKError as exc:
            msg = str(exc)
            answer = {"outcome": "raw" if _RAW.search(msg) else "typed", "error": type(exc).__name__, "message": msg[:600]}
        except BaseException as exc:  # noqa: BLE001 - the very thing being looked for
            answer = {"outcome": "untyped", "error": f"{type(exc).__module__}.{type(exc).__name__}", "message": str(exc)[:600]}
        proto.write(json.dumps(answer) + "\n")


class Worker:
    def __init__(self, timeout: float):
        self.timeout, self.proc = timeout, None

    def _start(self):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )

    def open(self, path: str) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        try:
            self.proc.stdin.write(path + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        if not ready:
            self.stop()
            return {"outcome": "hang", "message": f"no answer within {self.timeout:g} s"}
        line = self.proc.stdout.readline()
        if line:
            return json.loads(line)
        rc = self.proc.wait()
        self.proc = None
        how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"
        return {"outcome": "crash", "message": f"worker died: {how}"}

    def stop(self):
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None


# -- driver ---------------------------------------------------------------------------------------


def run_job(tasks: queue.Queue, results: list, timeout: float, workdir: str, keep: str | None) -> None:
    worker, files = Worker(timeout), {}
    try:
        while True:
            try:
                t, i, m = tasks.get_nowait()
            except queue.Empty:
                return
            wf = files.get(t.name) or files.setdefault(t.name, Workfile(t, tempfile.mkdtemp(dir=workdir)))
            path, undo = wf.apply(m)
            try:
                r = worker.open(path)
            finally:
                wf.restore(undo)
            r.update(model=t.name, index=i, mutant=m.desc)
            if keep and r["outcome"] in BAD:
                with open(os.path.join(keep, f"{t.name}-{i}{os.path.splitext(t.path)[1]}"), "wb") as f:
                    f.write(wf.mutated_bytes(m))
            results.append(r)
    finally:
        worker.stop()


def parse_models(specs: list[str] | None, default_n: int) -> dict[str, int]:
    from edgesdk import hub

    if not specs:
        return {name: default_n for name in hub.CATALOG}
    out = {}
    for s in specs:
        name, _, n = s.partition("=")
        if name not in hub.CATALOG:
            raise SystemExit(f"unknown hub model {name!r}; known: {', '.join(hub.CATALOG)}")
        out[name] = int(n) if n else default_n
    return out


def table(targets: dict[str, Target | None], counts: dict[str, Counter], skipped: dict[str, str]) -> str:
    cols = ("model", "format", "mutants") + OUTCOMES
    rows = [cols]
    for name, t in targets.items():
        c = counts.get(name, Counter())
        rows.append((name, t.fmt, str(sum(c.values()))) + tuple(str(c[o]) for o in OUTCOMES))
    total = Counter()
    for c in counts.values():
        total.update(c)
    rows.append(("total", "", str(sum(total.values()))) + tuple(str(total[o]) for o in OUTCOMES))
    widths = [max(len(r[k]) for r in rows) for k in range(len(cols))]
    lines = ["  ".join(v.ljust(w) if k < 2 else v.rjust(w) for k, (v, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines += [f"{name}: skipped ({why})" for name, why in skipped.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mutants", type=int, default=100, help="mutants per model (a model given as NAME=N overrides it)")
    ap.add_argument("--models", nargs="*", metavar="NAME[=N]", help="hub models (default: every installed one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds one mutant may take before it counts as a hang")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--keep", metavar="DIR", help="write every crashing/hanging/untyped mutant here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker_main()
        return 0
    from edgesdk import hub

    wanted = parse_models(args.models, args.mutants)
    targets, skipped, tasks = {}, {}, queue.Queue()
    for name, n in wanted.items():
        try:
            t = target(name)
        except hub.HubError as exc:
            skipped[name] = f"not installed: {exc}"
            continue
        if t is None:
            skipped[name] = "a model directory, not an ONNX/TFLite/GGUF file"
            continue
        targets[name] = t
        for i in range(n):
            tasks.put((t, i, mutant(t, random.Random(f"{args.seed}:{name}:{i}"))))
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    results: list[dict] = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgesdk-fuzz-") as workdir:
        jobs = [threading.Thread(target=run_job, args=(tasks, results, args.timeout, workdir, args.keep)) for _ in range(args.jobs)]
        for j in jobs:
            j.start()
        for j in jobs:
            j.join()
    counts: dict[str, Counter] = {}
    for r in results:
        counts.setdefault(r["model"], Counter())[r["outcome"]] += 1
    print(table(targets, counts, skipped))
    print(f"{len(results)} mutants in {time.monotonic() - t0:.0f} s (seed {args.seed}, {args.jobs} jobs, timeout {args.timeout:g} s)")
    bad = sorted((r for r in results if r["outcome"] in BAD), key=lambda r: (r["model"], r["index"]))
    for r in bad[:40]:
        print(f"  {r['outcome']:7s} {r['model']}#{r['index']} [{r['mutant']}]: {r.get('error', '')} {r.get('message', '')}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
