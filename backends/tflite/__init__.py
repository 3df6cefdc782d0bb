"""LiteRT (TFLite) backend: ``ai-edge-litert``'s interpreter, or ``tflite_runtime`` where that is installed.

The interpreter is not re-entrant, so a runner serialises calls with a lock; use one Session per
thread for parallel throughput. The interpreter persists across calls, so streaming models keep their
state (resource variables) from one ``run`` to the next; ``runner.reset_state()`` starts them over. LiteRT's GPU/NPU accelerators are offered when their library and
hardware are both present; otherwise the reason is recorded in ``notes`` and shown by ``edgesdk devices``.
"""

from __future__ import annotations

import glob
import logging
import os
import threading

import numpy as np

import edgesdk
from edgesdk._errors import BackendError, BackendUnavailable
from edgesdk._sysinfo import cpu_name, total_memory
from edgesdk.backend import Backend, Device, NodePlacement, Runner, TensorSpec

log = logging.getLogger("edgesdk.backends.tflite")


def _import_interpreter():
    try:
        from ai_edge_litert import interpreter as mod

        return mod, "ai-edge-litert"
    except ImportError as first:
        try:
            from tflite_runtime import interpreter as mod  # type: ignore

            return mod, "tflite_runtime"
        except ImportError:
            raise BackendUnavailable(f"neither ai-edge-litert nor tflite_runtime is importable ({first}); pip install ai-edge-litert") from first


class TFLiteBackend(Backend):
    name = "tflite"
    formats = ("tflite",)

    def __init__(self):
        self.notes: list[str] = []

    def probe(self):
        mod, dist = _import_interpreter()
        try:
            from importlib.metadata import version

            self.version = f"{dist} {version(dist)}"
        except Exception:
            self.version = dist
        self._mod = mod
        devs = [
            Device(
                self.name,
                "tflite:cpu",
                "cpu",
                f"{cpu_name()} (XNNPACK)",
                total_memory(),
                45,
                capabilities={"fp32", "fp16", "int8"},
                details={"runtime": self.version},
            )
        ]
        pkg_dir = os.path.dirname(getattr(mod, "__file__", "") or "")
        has_gpu_lib = bool(glob.glob(os.path.join(pkg_dir, "libLiteRt*Gpu*Accelerator*.so")))
        if not has_gpu_lib:
            self.notes.append("gpu: this LiteRT build has no GPU accelerator library")
        else:
            # The accelerator needs a real GPU; CompiledModel-based GPU execution is not wired yet.
            self.notes.append("gpu: LiteRT GPU accelerator library found, but GPU execution through CompiledModel is not supported by this edgesdk release")
        self.notes.append("npu: no LiteRT vendor dispatch library (Qualcomm/MediaTek/Intel SDK packages) installed")
        return devs

    def load(self, model, device, options):
        def new_interpreter():
            try:
                interp = self._mod.Interpreter(model_path=model.path, num_threads=options.threads)
                interp.allocate_tensors()
            except Exception as exc:
                raise BackendError(f"LiteRT could not load {model.path}: {exc}") from exc
            return interp

        return TFLiteRunner(new_interpreter(), device, new_interpreter)


def _specs(details):
    out = []
    for d in details:
        sig = d.get("shape_signature")
        sig = d["shape"] if sig is None or len(sig) == 0 else sig
        out.append(TensorSpec(d["name"], tuple(None if int(s) < 0 else int(s) for s in sig), np.dtype(d["dtype"])))
    return tuple(out)


class TFLiteRunner(Runner):
    """Extras beyond :class:`~edgesdk.backend.Runner`: ``quantization`` and :meth:`reset_state`."""

    def __init__(self, interp, device, new_interpreter=None):
        self._interp = interp
        self._new_interpreter = new_interpreter
        self._lock = threading.Lock()
        ins, outs = interp.get_input_details(), interp.get_output_details()
        self.inputs, self.outputs = _specs(ins), _specs(outs)
        # name -> (scale, zero_point) of each per-tensor quantized input/output: callers of int8
        # models need them to quantize features and dequantize scores.
        self.quantization = {d["name"]: (float(d["quantization"][0]), int(d["quantization"][1])) for d in (*ins, *outs) if d.get("quantization", (0.0, 0))[0]}
        self._in = [(d["name"], d["index"], tuple(d["shape"])) for d in ins]
        self._shapes = {d["index"]: tuple(d["shape"]) for d in ins}
        self._out = [(d["name"], d["index"]) for d in outs]
        try:
            ops = interp._get_ops_details()
            self.nodes = tuple(NodePlacement(f"{o['op_name']}_{o['index']}", o["op_name"], device.id) for o in ops)
        except Exception:
            self.nodes = ()

    def run(self, feeds, output_names=None):
        wanted = self._out if output_names is None else [(n, i) for n, i in self._out if n in set(output_names)]
        with self._lock:
            try:
                interp = self._interp
                resized = False
                for name, idx, _ in self._in:
                    shape = feeds[name].shape
                    if self._shapes[idx] != shape:
                        interp.resize_tensor_input(idx, shape, strict=True)
                        self._shapes[idx] = shape
                        resized = True
                if resized:
                    interp.allocate_tensors()
                for name, idx, _ in self._in:
                    interp.set_tensor(idx, feeds[name])
                interp.invoke()
                return {name: interp.get_tensor(idx) for name, idx in wanted}
            except Exception as exc:
                raise BackendError(f"LiteRT run failed: {exc}") from exc

    def reset_state(self):
        """Start over with fresh state: streaming models keep resource variables (VAR_HANDLE /
        ASSIGN_VARIABLE) inside the interpreter across ``run`` calls, and neither LiteRT's
        ``reset_all_variables`` nor ``allocate_tensors`` clears them, so a new interpreter is built."""
        if self._new_interpreter is None or self._interp is None:
            raise BackendError("this LiteRT runner is closed or cannot rebuild its interpreter")
        interp = self._new_interpreter()
        with self._lock:
            self._interp = interp
            self._shapes = {d["index"]: tuple(d["shape"]) for d in interp.get_input_details()}

    op_times_note = "LiteRT's Python Interpreter has no profiler hook (its per-op profiler is C++ only: benchmark_model --enable_op_profiling)"

    def close(self):
        self._interp = None


@edgesdk.hookimpl
def edgesdk_backends():
    return [TFLiteBackend()]
