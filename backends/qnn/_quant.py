"""QDQ quantization for NPUs (Qualcomm HTP), built on onnxruntime.quantization's QNN configuration.

    report = quantize_for_npu("model.onnx", "model.qdq.onnx", calibration="calib_dir/")
    print(report.summary())

HTP runs integer (QDQ) models fastest and compiles static shapes only, so a model with dynamic inputs
is first fixed to the calibration samples' shapes. Calibration data is a directory of ``.npz`` files
(one sample each, keyed by input name) or ``.npy`` files (single-input models: one sample, or a stack
of samples along a new first axis), or any iterable/generator of ``{input name: array}`` dicts.

The accuracy report compares the quantized model with the float model on the evaluation samples
(the calibration samples unless ``eval_data`` is given). By default both run on ONNX Runtime's CPU EP
with only basic graph optimizations, so each Q/DQ pair is evaluated as written: that measures the
quantization, not one runtime's int8 kernel fusions (ORT 1.31's fused QLinearSoftmax, for one,
disagrees with its own unfused QDQ Softmax). ``evaluate_on="qnn"`` measures a device instead.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Mapping

import attrs
import numpy as np

from edgesdk._errors import QuantizationError
from edgesdk.diff import TensorDiff, Tolerance, compare

__all__ = ["NpuQuantReport", "quantize_for_npu", "load_calibration", "ACTIVATION_TYPES", "WEIGHT_TYPES", "METHODS"]

log = logging.getLogger("edgesdk.backends.qnn.quant")

ACTIVATION_TYPES = ("uint8", "uint16")
WEIGHT_TYPES = ("uint8", "int8", "uint16", "int16")
METHODS = ("minmax", "entropy", "percentile")


@attrs.frozen
class NpuQuantReport:
    """What :func:`quantize_for_npu` produced and how close it is to the float model."""

    model: str
    output: str
    activation_type: str
    weight_type: str
    per_channel: bool
    method: str
    calibration_samples: int
    eval_samples: int
    evaluated_on: str
    input_shapes: Mapping[str, tuple[int, ...]]
    outputs: tuple[TensorDiff, ...]
    qdq_nodes: int
    float_bytes: int
    quant_bytes: int
    seconds: float

    @property
    def worst_cosine(self) -> float:
        return min((o.cosine for o in self.outputs), default=1.0)

    def summary(self) -> str:
        lines = [
            f"{os.path.basename(self.model)} -> {self.output}",
            f"  QDQ a{self.activation_type}/w{self.weight_type}{' per-channel' if self.per_channel else ''}, {self.method} calibration "
            f"on {self.calibration_samples} sample(s); {self.qdq_nodes} Q/DQ nodes; "
            f"{self.float_bytes / 2**20:.2f} MiB -> {self.quant_bytes / 2**20:.2f} MiB in {self.seconds:.1f} s",
            "  static input shapes: " + ", ".join(f"{k}={list(v)}" for k, v in self.input_shapes.items()),
            f"  accuracy vs the float model over {self.eval_samples} sample(s), quantized model run on {self.evaluated_on}:",
        ]
        lines += [f"    {o.name}: max|e|={o.max_abs:.4g} mean|e|={o.mean_abs:.4g} cos={o.cosine:.5f} (max|float|={o.ref_max_abs:.4g})" for o in self.outputs]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def load_calibration(source, inputs, limit: int | None = None) -> list[dict[str, np.ndarray]]:
    """Samples (``{input: array}``) from a directory of .npz/.npy files, an iterable of dicts or a
    callable returning one. ``inputs`` are the model's TensorSpecs; each sample is checked against them."""
    names = [s.name for s in inputs]
    if isinstance(source, (str, os.PathLike)):
        samples = _from_dir(Path(source), inputs)
    else:
        it = source() if callable(source) else source
        if isinstance(it, Mapping):
            raise QuantizationError("calibration must be an iterable of {input name: array} dicts, not one dict")
        samples = []
        for i, s in enumerate(it):
            if limit is not None and len(samples) >= limit:
                break
            if not isinstance(s, Mapping):
                raise QuantizationError(f"calibration sample {i} is a {type(s).__name__}, not a {{input name: array}} dict")
            samples.append({k: np.asarray(v) for k, v in s.items()})
    if limit is not None:
        samples = samples[:limit]
    if not samples:
        raise QuantizationError(f"no calibration samples in {source!r}")
    for i, s in enumerate(samples):
        missing = [n for n in names if n not in s]
        if missing:
            raise QuantizationError(f"calibration sample {i} lacks input(s) {missing}; the model's inputs are {names}")
        for spec in inputs:
            a = s[spec.name]
            if spec.shape is not None and a.ndim != len(spec.shape):
                raise QuantizationError(f"calibration sample {i}: input {spec.name!r} has rank {a.ndim}, the model wants {spec}")
            if a.shape != samples[0][spec.name].shape:
                raise QuantizationError(
                    f"calibration sample {i}: input {spec.name!r} has shape {a.shape}, sample 0 had "
                    f"{samples[0][spec.name].shape}; the NPU model is compiled for one static shape"
                )
            if a.dtype != spec.dtype:
                if not np.can_cast(a.dtype, spec.dtype, "same_kind"):
                    raise QuantizationError(f"calibration sample {i}: input {spec.name!r} is {a.dtype}, the model wants {spec.dtype}")
                s[spec.name] = a.astype(spec.dtype)
        samples[i] = {n: np.ascontiguousarray(s[n]) for n in names}
    return samples


def _from_dir(d: Path, inputs) -> list[dict]:
    if not d.is_dir():
        raise QuantizationError(f"calibration directory {str(d)!r} does not exist")
    files = sorted(p for p in d.iterdir() if p.suffix in (".npz", ".npy"))
    if not files:
        raise QuantizationError(f"calibration directory {str(d)!r} has no .npz or .npy files")
    samples = []
    for f in files:
        try:
            if f.suffix == ".npz":
                with np.load(f, allow_pickle=False) as z:
                    samples.append({k: z[k] for k in z.files})
                continue
            a = np.load(f, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise QuantizationError(f"calibration file {str(f)!r} is not a readable .npy/.npz: {exc}") from None
        if len(inputs) != 1:
            raise QuantizationError(
                f"{f.name}: .npy calibration files serve single-input models; this one has inputs "
                f"{[s.name for s in inputs]}, use .npz files keyed by input name"
            )
        spec = inputs[0]
        rank = len(spec.shape) if spec.shape is not None else a.ndim
        if a.ndim == rank + 1:
            samples += [{spec.name: x} for x in a]
        else:
            samples.append({spec.name: a})
    return samples


_QT = {"uint8": "QUInt8", "int8": "QInt8", "uint16": "QUInt16", "int16": "QInt16"}
_METHOD = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def _check(name, value, choices):
    if value not in choices:
        raise QuantizationError(f"{name} must be one of {choices}, got {value!r}")


def quantize_for_npu(
    model,
    output,
    calibration,
    *,
    activation_type: str = "uint8",
    weight_type: str = "uint8",
    per_channel: bool = False,
    method: str = "minmax",
    max_samples: int | None = None,
    eval_data=None,
    evaluate_on: str | None = None,
    options=None,
) -> NpuQuantReport:
    """Quantize ONNX ``model`` to a QDQ model for the QNN HTP at ``output``; returns the accuracy report.

    ``calibration`` / ``eval_data``: see :func:`load_calibration`. ``evaluate_on``: a placement
    target (e.g. ``"qnn"``) to run the quantized model on for the report, with ``options`` (a
    SessionOptions) for its backend options; None = QDQ reference semantics on the CPU EP.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize
    from onnxruntime.quantization.calibrate import CalibrationMethod
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    import onnx

    from edgesdk import hub
    from edgesdk._io import atomic_write_bytes
    from edgesdk._modelfile import open_model
    from edgesdk._onnxgraph import constants_to_initializers, dynamic_inputs, fix_input_shapes, is_qdq, load_onnx
    from edgesdk._registry import get_registry

    _check("activation_type", activation_type, ACTIVATION_TYPES)
    _check("weight_type", weight_type, WEIGHT_TYPES)
    _check("method", method, METHODS)
    t0 = time.perf_counter()
    model = hub.resolve(model) if isinstance(model, str) and model.startswith("hub:") else os.fspath(model)
    m = open_model(model, get_registry())
    if m.format != "onnx":
        raise QuantizationError(f"QDQ quantization for the NPU takes ONNX models; {model} is {m.format}")
    if is_qdq(m.info.get("op_types", ())):
        raise QuantizationError(f"{model} is already QDQ-quantized")
    specs = tuple(m.info.get("inputs") or ())
    samples = load_calibration(calibration, specs, max_samples)
    evals = samples if eval_data is None else load_calibration(eval_data, specs)
    shapes = {s.name: tuple(int(d) for d in samples[0][s.name].shape) for s in specs}
    tmp = Path(tempfile.mkdtemp(prefix="edgesdk-npuq-"))
    try:
        src = tmp / "float.onnx"
        proto = load_onnx(model)
        if dynamic_inputs(specs):
            fix_input_shapes(proto, {s.name: shapes[s.name] for s in dynamic_inputs(specs)})
        constants_to_initializers(proto)
        onnx.save_model(proto, str(src))
        src_q = _preprocess(src, tmp)

        class Reader(CalibrationDataReader):
            def __init__(self):
                self._it = iter(samples)

            def get_next(self):
                return next(self._it, None)

        try:
            cfg = get_qnn_qdq_config(
                str(src_q),
                Reader(),
                calibrate_method=getattr(CalibrationMethod, _METHOD[method]),
                activation_type=getattr(QuantType, _QT[activation_type]),
                weight_type=getattr(QuantType, _QT[weight_type]),
                per_channel=per_channel,
            )
            out_tmp = tmp / "qdq.onnx"
            quantize(str(src_q), str(out_tmp), cfg)
        except Exception as exc:
            raise QuantizationError(f"onnxruntime could not QDQ-quantize {model}: {type(exc).__name__}: {exc}") from exc
        qproto = onnx.load_model(str(out_tmp))
        qdq_nodes = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in qproto.graph.node)
        diffs, where = _accuracy(str(src), str(out_tmp), evals, evaluate_on, options)
        atomic_write_bytes(output, out_tmp.read_bytes())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return NpuQuantReport(
        model=model,
        output=os.fspath(output),
        activation_type=activation_type,
        weight_type=weight_type,
        per_channel=per_channel,
        method=method,
        calibration_samples=len(samples),
        eval_samples=len(evals),
        evaluated_on=where,
        input_shapes=shapes,
        outputs=diffs,
        qdq_nodes=qdq_nodes,
        float_bytes=m.size,
        quant_bytes=os.path.getsize(output),
        seconds=time.perf_counter() - t0,
    )


def _preprocess(src: Path, tmp: Path) -> Path:
    """Fold constants and infer shapes, then apply the QNN graph fusions; returns the model to quantize.

    The folding is not optional: exporters such as paddle2onnx compute shapes and biases with
    Constant/Shape subgraphs, and quantizing those corrupts the integer shape arithmetic
    (PP-OCR det then fails with a 95-vs-96 broadcast); and an unfolded BatchNormalization, quantized
    as its own op, is computed wrongly by the HTP (PP-OCR cls: cosine 0.57 to the float model). ``qnn_preprocess_model`` in ORT 1.31 crashes
    on a model carrying metadata_props, so they are dropped from the intermediate copy.
    """
    import onnx
    from onnxruntime.quantization.execution_providers.qnn import qnn_preprocess_model
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folded = tmp / "folded.onnx"
    try:
        # Shapes are static by now, so ONNX's shape inference suffices; ORT's symbolic one asserts
        # on paddle2onnx's shape-computing Concats.
        quant_pre_process(str(src), str(folded), skip_symbolic_shape=True)
    except Exception as exc:
        log.warning("shape inference/constant folding before quantization failed (%s: %s); quantizing the model as is", type(exc).__name__, exc)
        folded = src
    m = onnx.load_model(str(folded))
    if m.metadata_props:
        del m.metadata_props[:]
        folded = tmp / "folded-nometa.onnx"
        onnx.save_model(m, str(folded))
    fused = tmp / "fused.onnx"
    out = fused if qnn_preprocess_model(str(folded), str(fused)) else folded
    m = onnx.load_model(str(out))
    if not any(p.key == "onnx.quant.pre_process" for p in m.metadata_props):
        # Tells the quantizer the model is pre-processed (it warns otherwise); true, done above.
        onnx.helper.set_model_props(m, {"onnx.quant.pre_process": "onnxruntime.quant"})
        out = tmp / "prepared.onnx"
        onnx.save_model(m, str(out))
    return out


def _accuracy(float_path, qdq_path, evals, evaluate_on, options) -> tuple[tuple[TensorDiff, ...], str]:
    import onnxruntime as ort

    def ort_runner(path, level):
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        so.log_severity_level = 3
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        return names, lambda feeds: dict(zip(names, sess.run(names, feeds)))

    names, run_float = ort_runner(float_path, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    if evaluate_on is None:
        _, run_q = ort_runner(qdq_path, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
        where, session = "onnxruntime CPU EP (QDQ reference semantics)", None
    else:
        from edgesdk._options import SessionOptions
        from edgesdk._session import Session

        session = Session(qdq_path, attrs.evolve(options or SessionOptions(), require=evaluate_on))
        run_q, where = session.run, session.device.id + (" (simulated)" if session.device.simulated else "")
    try:
        ref = {n: [] for n in names}
        got = {n: [] for n in names}
        for feeds in evals:
            a, b = run_float(feeds), run_q(feeds)
            for n in names:
                ref[n].append(a[n])
                got[n].append(b[n])
    finally:
        if session is not None:
            session.close()
    tol = Tolerance.for_model(True)
    return tuple(compare(n, np.stack(ref[n]), np.stack(got[n]), tol) for n in names), where
