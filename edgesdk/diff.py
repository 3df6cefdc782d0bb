"""Cross-backend diff: run the same inputs on two backends/devices and say where their answers part.

``diff(model, "onnxruntime:cpu", "qnn")`` runs both, reports per-output max/mean absolute error and
cosine similarity, and, for an ONNX model whose outputs diverge, re-runs a copy of the model with
every intermediate float tensor exposed as a graph output to name the first node (in topological
order) whose output is beyond tolerance - usually the op a backend implements differently.

Exposing intermediates changes what a backend may fuse, so the located node is where the *unfused*
graphs first disagree; the final-output comparison always uses the model as given.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Mapping

import attrs
import numpy as np

__all__ = ["Tolerance", "TensorDiff", "Divergence", "DiffReport", "compare", "diff"]

log = logging.getLogger("edgesdk.diff")


def _nonneg(instance, attribute, value):
    if not (isinstance(value, (int, float)) and value >= 0):
        raise ValueError(f"{attribute.name} must be a number >= 0, got {value!r}")


@attrs.frozen
class Tolerance:
    """When two tensors count as the same: ``max|a-b| <= atol + rtol*max|a|`` and ``cosine >= min_cosine``."""

    atol: float = attrs.field(default=1e-4, validator=_nonneg)
    rtol: float = attrs.field(default=1e-2, validator=_nonneg)
    min_cosine: float = attrs.field(default=0.999, validator=_nonneg)

    @classmethod
    def for_model(cls, qdq: bool, **given) -> "Tolerance":
        """Defaults for a float model, or for a QDQ one where backends legitimately round each
        requantization differently: a few LSBs anywhere, which a downstream Mul can scale up."""
        base = cls(rtol=0.1, min_cosine=0.99) if qdq else cls()
        return attrs.evolve(base, **{k: v for k, v in given.items() if v is not None})

    def __str__(self) -> str:
        return f"|a-b| <= {self.atol:g} + {self.rtol:g}*max|a|, cos >= {self.min_cosine:g}"


@attrs.frozen
class TensorDiff:
    """How far tensor ``b`` is from reference ``a``.

    ``ok``: ``max_abs <= atol + rtol * max|a|`` and ``cosine >= min_cosine``, with no non-finite
    value in one tensor that is not in the other.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    max_abs: float
    mean_abs: float
    cosine: float
    ref_max_abs: float
    ok: bool
    note: str | None = None

    def __str__(self) -> str:
        flag = "ok" if self.ok else "DIVERGES"
        extra = f" ({self.note})" if self.note else ""
        return (
            f"{self.name}: {self.dtype}{list(self.shape)} max|a-b|={self.max_abs:.4g} mean|a-b|={self.mean_abs:.4g} "
            f"cos={self.cosine:.6f} (max|a|={self.ref_max_abs:.4g}) {flag}{extra}"
        )


@attrs.frozen
class Divergence:
    """The first node whose output is beyond tolerance; ``inputs`` are its input tensors' diffs."""

    node: str
    op_type: str
    tensor: TensorDiff
    index: int
    inputs: tuple[TensorDiff, ...] = ()

    def __str__(self) -> str:
        ins = "; ".join(f"input {d}" for d in self.inputs)
        return f"node #{self.index} {self.node!r} ({self.op_type}) -> {self.tensor}" + (f"\n    {ins}" if ins else "")


@attrs.frozen
class DiffReport:
    """Result of :func:`diff`: per-output diffs, and the first diverging node when it was located."""

    model: str
    a: str
    b: str
    outputs: tuple[TensorDiff, ...]
    tolerance: Tolerance
    first_divergence: Divergence | None = None
    intermediates_compared: int = 0
    placement_a: str = ""
    placement_b: str = ""
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)

    def summary(self) -> str:
        lines = [f"{os.path.basename(self.model)}: a={self.a} vs b={self.b} (same if {self.tolerance})"]
        for label, p in (("a", self.placement_a), ("b", self.placement_b)):
            if p:
                lines.append(f"  {label}: " + p.splitlines()[0])
        lines += [f"  output {o}" for o in self.outputs]
        if self.first_divergence is not None:
            lines.append(f"  first diverging node ({self.intermediates_compared} intermediate tensors compared): {self.first_divergence}")
        elif self.intermediates_compared:
            lines.append(f"  no intermediate tensor diverges ({self.intermediates_compared} compared); only the final outputs differ")
        lines += [f"  note: {n}" for n in self.notes]
        lines.append("  verdict: " + ("same within tolerance" if self.ok else "DIFFERENT"))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def compare(name: str, a, b, tol: Tolerance = Tolerance()) -> TensorDiff:
    """Compare ``b`` against reference ``a`` (any numeric dtype; computed in float64)."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        return TensorDiff(name, tuple(a.shape), str(a.dtype), float("inf"), float("inf"), float("nan"), float("nan"), False, f"shape {tuple(b.shape)} in b")
    x = a.astype(np.float64).ravel()
    y = b.astype(np.float64).ravel()
    fin_x, fin_y = np.isfinite(x), np.isfinite(y)
    note = None
    if not np.array_equal(fin_x, fin_y) or not np.array_equal(x[~fin_x], y[~fin_y]):
        note = f"non-finite values differ ({int((~fin_x).sum())} in a, {int((~fin_y).sum())} in b)"
    both = fin_x & fin_y
    x, y = x[both], y[both]
    if x.size == 0:
        return TensorDiff(name, tuple(a.shape), str(a.dtype), 0.0, 0.0, 1.0, 0.0, note is None, note)
    err = np.abs(x - y)
    max_abs, mean_abs, ref = float(err.max()), float(err.mean()), float(np.abs(x).max())
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    cosine = 1.0 if nx == 0 and ny == 0 else (0.0 if nx == 0 or ny == 0 else float(np.dot(x, y) / (nx * ny)))
    ok = note is None and max_abs <= tol.atol + tol.rtol * ref and cosine >= tol.min_cosine
    return TensorDiff(name, tuple(a.shape), str(a.dtype), max_abs, mean_abs, cosine, ref, ok, note)


def _run(model, target, feeds, options, output_names=None, scratch=False):
    from ._options import SessionOptions
    from ._session import Session

    opts = attrs.evolve(options or SessionOptions(), require=target)
    if scratch:
        # A temporary rewrite of the model: its compiled artifacts must not fill the user's
        # compiled-artifact cache (e.g. a QNN context binary).
        opts = attrs.evolve(opts, artifact_cache=False)
    with Session(model, opts) as s:
        out = s.run({k: v for k, v in feeds.items() if k in {i.name for i in s.inputs}}, output_names)
        return out, s.placement


def diff(
    model,
    a: str,
    b: str,
    feeds: Mapping[str, np.ndarray] | None = None,
    *,
    seed: int = 0,
    dims: Mapping[str, int] | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    min_cosine: float | None = None,
    locate: bool | None = None,
    options=None,
) -> DiffReport:
    """Run ``model`` on placement targets ``a`` and ``b`` (device ids, backend names or kinds) and compare.

    ``feeds`` not given are random (normal floats, zero ints; symbolic dims from ``dims`` or 1), the
    same for both sides. ``a`` is the reference. Tolerances not given take :meth:`Tolerance.for_model`
    defaults (looser for QDQ models). ``locate``: find the first diverging node (ONNX only);
    None means only when an output diverges. ``options`` (a SessionOptions) carries e.g. backend options.
    """
    from . import hub
    from ._feeds import random_feeds
    from ._modelfile import open_model
    from ._registry import get_registry

    if isinstance(model, str) and model.startswith("hub:"):
        model = hub.resolve(model)
    model = os.fspath(model)
    opened = open_model(model, get_registry())
    from ._onnxgraph import is_qdq

    tol = Tolerance.for_model(is_qdq(opened.info.get("op_types", ())), atol=atol, rtol=rtol, min_cosine=min_cosine)
    feeds = random_feeds(opened.info.get("inputs") or (), seed=seed, dims=dims, given=feeds)
    out_a, place_a = _run(model, a, feeds, options)
    out_b, place_b = _run(model, b, feeds, options)
    outputs = tuple(compare(k, out_a[k], out_b[k], tol) for k in out_a if k in out_b)
    notes = []
    for side, p in (("a", place_a), ("b", place_b)):
        if p.device.simulated:
            notes.append(f"{side} ran on {p.device.id}, a simulated device: outputs are meaningful, timings are not")
    report = DiffReport(
        model, place_a.device.id, place_b.device.id, outputs, tol, placement_a=place_a.summary(), placement_b=place_b.summary(), notes=tuple(notes)
    )
    want_locate = (not report.ok) if locate is None else locate
    if want_locate:
        if opened.format != "onnx":
            return attrs.evolve(report, notes=report.notes + ("locating the diverging node needs an ONNX model",))
        div, n = _locate(model, a, b, feeds, options, tol)
        report = attrs.evolve(report, first_divergence=div, intermediates_compared=n)
    return report


def _locate(model, a, b, feeds, options, tol) -> tuple[Divergence | None, int]:
    """The first node whose output diverges, and how many intermediate tensors were compared.

    A float graph gets every intermediate float tensor exposed at once (one run per side, exact
    topological first). A QDQ graph cannot: exposing a tensor inside a DequantizeLinear -> op ->
    QuantizeLinear unit breaks the unit, so an NPU would run that op in float (or refuse it). There
    the candidates are the dequantized activations (DequantizeLinear outputs, unit boundaries), each
    checked in a copy truncated at that tensor, by bisection: the node found takes agreeing inputs to
    a diverging output. Bisection is also the fallback when a backend rejects the exposed copy.
    """
    from ._onnxgraph import is_qdq, load_onnx

    proto = load_onnx(model)
    graph = _Graph(proto)
    if not is_qdq(n.op_type for n in proto.graph.node):
        try:
            return _locate_exposed(proto, graph, a, b, feeds, options, tol)
        except Exception as exc:  # e.g. an NPU refusing the copy with hundreds of outputs
            log.info("exposing all intermediates failed (%s); bisecting instead", exc)
    return _locate_bisect(proto, graph, a, b, feeds, options, tol)


class _Graph:
    """Producer/consumer lookups over an ONNX graph, in topological (node list) order."""

    def __init__(self, proto):
        import onnx

        self.nodes = list(proto.graph.node)
        self.names = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(self.nodes)]
        self.producer = {o: i for i, n in enumerate(self.nodes) for o in n.output if o}
        self.consts = {t.name for t in proto.graph.initializer} | {o for n in self.nodes if n.op_type == "Constant" for o in n.output}
        # Tensors computed from the graph inputs: the rest is constant folding, not worth comparing.
        self.live = {i.name for i in proto.graph.input} - self.consts
        for n in self.nodes:
            if any(x in self.live for x in n.input):
                self.live.update(o for o in n.output if o)
        floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
        try:
            inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False).graph
            types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.value_info) + list(inferred.output)}
        except Exception:
            types = {}
        # Untyped tensors are kept: a compare of non-float data still says whether it differs.
        self.is_float = lambda t: types.get(t, onnx.TensorProto.FLOAT) in floats

    def activations(self) -> list[str]:
        """Tensors worth comparing: dequantized activations in a QDQ graph, float node outputs otherwise."""
        qdq = []
        for n in self.nodes:
            if n.op_type != "DequantizeLinear" or n.input[0] not in self.producer:
                continue
            q = self.nodes[self.producer[n.input[0]]]
            if q.op_type == "QuantizeLinear" and q.input[0] in self.live:
                qdq.append(n.output[0])
        if qdq:
            return qdq
        return [o for n in self.nodes for o in n.output if o in self.live and self.is_float(o)]

    def origin(self, tensor) -> int:
        """The node a tensor really comes from: through DequantizeLinear <- QuantizeLinear to the op."""
        i = self.producer[tensor]
        n = self.nodes[i]
        if n.op_type == "DequantizeLinear" and n.input[0] in self.producer:
            q = self.producer[n.input[0]]
            if self.nodes[q].op_type == "QuantizeLinear":
                # The op before the Q; for a graph input, the quantization itself.
                return self.producer.get(self.nodes[q].input[0], q)
        return i

    def divergence(self, tensor, d, ra, rb, feeds, tol) -> Divergence:
        i = self.origin(tensor)
        n = self.nodes[i]
        ins = []
        for t in n.input:
            if not t or t in self.consts:
                continue
            src = feeds if t in feeds else None
            if src is None and t in ra and t in rb:
                ins.append(compare(t, ra[t], rb[t], tol))
        return Divergence(self.names[i], n.op_type, d, i, tuple(ins))


def _save(proto, tmp, name):
    import onnx

    path = os.path.join(tmp, name)
    big = proto.ByteSize() > 1_900_000_000
    onnx.save_model(proto, path, save_as_external_data=big, location=name + ".data" if big else None)
    return path


def _locate_exposed(proto, graph, a, b, feeds, options, tol):
    from ._onnxgraph import expose_outputs

    tensors = graph.activations()
    copy = type(proto)()
    copy.CopyFrom(proto)
    expose_outputs(copy, tensors)
    tmp = tempfile.mkdtemp(prefix="edgesdk-diff-")
    try:
        path = _save(copy, tmp, "exposed.onnx")
        ra, _ = _run(path, a, feeds, options, scratch=True)
        rb, _ = _run(path, b, feeds, options, scratch=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    compared = 0
    for t in tensors:
        if t not in ra or t not in rb:
            continue
        compared += 1
        d = compare(t, ra[t], rb[t], tol)
        if not d.ok:
            return graph.divergence(t, d, ra, rb, feeds, tol), compared
    return None, compared


def _locate_bisect(proto, graph, a, b, feeds, options, tol):
    from ._onnxgraph import truncate

    outputs = {o.name for o in proto.graph.output}
    cands = [o for o in graph.activations() if o not in outputs]
    tmp = tempfile.mkdtemp(prefix="edgesdk-diff-")
    results: dict[int, tuple[TensorDiff, dict, dict]] = {}

    def check(k):
        if k not in results:
            t = cands[k]
            sub = truncate(proto, [t])
            path = _save(sub, tmp, f"prefix{k}.onnx")
            ra, _ = _run(path, a, feeds, options, scratch=True)
            rb, _ = _run(path, b, feeds, options, scratch=True)
            results[k] = (compare(t, ra[t], rb[t], tol), ra, rb)
        return results[k][0].ok

    try:
        lo, hi = -1, len(cands)  # cands[lo] agrees (or lo = the inputs); the outputs (hi) diverge
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if check(mid):
                lo = mid
            else:
                hi = mid
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if hi == len(cands):
        return None, len(results)
    d, ra, rb = results[hi]
    div = graph.divergence(cands[hi], d, ra, rb, feeds, tol)
    if lo >= 0:  # the agreeing boundary before it, so the reader sees the error appear
        div = attrs.evolve(div, inputs=div.inputs + (results[lo][0],))
    return div, len(results)
