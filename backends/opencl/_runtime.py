"""One OpenCL device ready to run the LLM kernels: context, in-order queue, built program, launchers.

Kernels are in ``kernels/llm.cl``. Each launcher enqueues and returns at once; the queue is in-order,
so a forward pass is one stream of launches with a single wait when the logits are read back.
"""

from __future__ import annotations

import logging
from importlib import resources

import numpy as np

from edgesdk._errors import BackendError, UnsupportedModelError
from edgesdk.quant import TYPES

from ._progcache import ProgramCache, build_program

__all__ = ["ClRuntime", "ClWeight", "FORMATS", "GEMM_KINDS", "GEMV_MAX_ROWS", "GEMV_SHAPES", "kernel_source", "split_blocks"]

log = logging.getLogger("edgesdk.backends.opencl")

RED_LS, MAX_HD, TILE, GEMV_MAX_WG = 64, 256, 16, 256
#: GEMV work-group (lanes per output row, rows per work-group) by OpenCL device type. A GPU hides
#: memory latency with many lanes per row (16 x 4 = 64: one Adreno/Mali wave); on a CPU device every
#: work-group costs a scheduling round and a reduction buys nothing, so one lane and many rows
#: (PoCL, SmolLM2's 49k-row LM head: 15.4 ms per call at 16 x 4, 7.7 ms at 1 x 128; noisy shared VM).
GEMV_SHAPES = {"GPU": (16, 4), "CPU": (1, 128)}
#: GEMM kernel (prompts) by device type: "tiled" stages 16x32 tiles in local memory (GPUs); "rows" keeps
#: 8 rows per work-item in registers with no barriers (PoCL: SmolLM2 gate/up at 64 rows, 150 ms tiled).
GEMM_KINDS = {"GPU": "tiled", "CPU": "rows"}
RT_ROWS = 8
#: Up to this many rows a matmul runs the GEMV kernel once per row: decode, speculative verification and
#: a short prompt then see the same arithmetic row by row (greedy output cannot depend on batch size).
GEMV_MAX_ROWS = 16
BUILD_OPTIONS = f"-cl-std=CL1.2 -DGEMV_MAX_WG={GEMV_MAX_WG} -DRED_LS={RED_LS} -DMAX_HD={MAX_HD}"
#: GGUF tensor type -> kernel format, for every type of the quant-type table: Q4_0/Q4_1/Q8_0 as stored,
#: float types widened to F32 on upload (rare: untied heads), every other block type as its decoded
#: int8 codes with float scales/mins per 32 (I8F) or per 16 (I8F2) elements (llm.cl).
FORMATS = {t.name: t.name if t.name in ("Q4_0", "Q4_1", "Q8_0") else "F32" if not t.quantized else "I8F" if t.sub == 32 else "I8F2" for t in TYPES.values()}
# Per block type the kernels read: (block bytes, has min, code bytes), from the quant-type table.
_BLOCKS = {f: (TYPES[f].nbytes, TYPES[f].has_min, TYPES[f].block * TYPES[f].bits // 8) for f in ("Q4_0", "Q4_1", "Q8_0")}


def kernel_source() -> str:
    return resources.files(__package__).joinpath("kernels/llm.cl").read_text()


def split_blocks(raw: np.ndarray, qtype: str, k: int):
    """GGUF rows -> struct-of-arrays (codes uint8, scales, mins or None) as the kernels read them.

    Codes keep GGUF's order, so a block's 16 (Q4) or 32 (Q8) code bytes are one aligned vector load;
    scales/mins are fp16 for Q4_0/Q4_1/Q8_0 and float32 for I8F/I8F2. Float rows become fp32 "codes".
    """
    if k % 32:
        raise UnsupportedModelError("", f"the OpenCL kernels need rows of whole 32-blocks, got K={k}")
    n = raw.shape[0]
    t = TYPES[qtype]
    if not t.quantized:
        return np.ascontiguousarray(t.dequantize(raw), np.float32).view(np.uint8), None, None
    if FORMATS[qtype] in ("I8F", "I8F2"):
        codes, scale, mn = t.decoded(raw)
        mn = np.zeros_like(scale) if mn is None else mn
        return (
            np.ascontiguousarray(codes).view(np.uint8).reshape(-1),
            np.ascontiguousarray(scale, np.float32).reshape(-1),
            np.ascontiguousarray(mn, np.float32).reshape(-1),
        )
    size, has_min, code = _BLOCKS[qtype]
    b = np.ascontiguousarray(raw).reshape(n, k // 32, size)
    d = np.ascontiguousarray(b[..., 0:2]).view(np.float16).reshape(-1)
    m = np.ascontiguousarray(b[..., 2:4]).view(np.float16).reshape(-1) if has_min else None
    qs = np.ascontiguousarray(b[..., size - code :]).reshape(-1)
    return qs, d, m


class ClWeight:
    """``y = x @ W.T`` on the device, W stacking the rows of several GGUF tensors with the same K.

    Consecutive tensors of one format are concatenated into one segment (one launch); a fused
    projection mixing formats (e.g. Q4_0 Q/K with a Q8_0 V) runs one launch per segment, each
    writing its own columns of the output.
    """

    def __init__(self, rt: "ClRuntime", parts, names=()):
        """``parts``: (raw rows, GGUF type name, n rows, k) per tensor, in output-column order."""
        self.rt = rt
        self.names = tuple(names)
        self.k = parts[0][3]
        if any(p[3] != self.k for p in parts):
            raise UnsupportedModelError("", f"cannot fuse {self.names}: different input sizes")
        self.n = sum(p[2] for p in parts)
        self.nbytes = 0
        self.segments = []  # (format, codes, scales, mins, rows, first output column)
        col = 0
        groups: list[list] = []
        for raw, qtype, n, k in parts:
            fmt = FORMATS.get(qtype)
            if fmt is None:
                raise UnsupportedModelError("", f"tensor type {qtype} is not supported by the OpenCL kernels")
            if groups and groups[-1][0] == fmt:
                groups[-1][1].append((raw, qtype, n))
            else:
                groups.append([fmt, [(raw, qtype, n)]])
        for fmt, members in groups:
            arrays = [split_blocks(raw, qtype, self.k) for raw, qtype, _ in members]
            rows = sum(n for _, _, n in members)
            qs = np.concatenate([a[0] for a in arrays])
            d = None if arrays[0][1] is None else np.concatenate([a[1] for a in arrays])
            m = None if arrays[0][2] is None else np.concatenate([a[2] for a in arrays])
            bufs = [rt.upload(a) for a in (qs, d, m) if a is not None]
            self.nbytes += sum(a.nbytes for a in (qs, d, m) if a is not None)
            # Formats without scales/mins get the codes buffer in those slots: the kernel never reads it.
            qb = bufs[0]
            db = bufs[1] if d is not None else qb
            mb = bufs[2] if m is not None else db
            self.segments.append((fmt, qb, db, mb, rows, col))
            col += rows

    def __call__(self, x, ldx: int, rows: int, y, ldy: int, y_off: int = 0, accumulate: bool = False) -> None:
        """Enqueue y[:rows, y_off:y_off + n] (+)= x[:rows, :k] @ W.T (buffers, row strides in floats)."""
        for fmt, qb, db, mb, n, col in self.segments:
            self.rt.matmul(fmt, qb, db, mb, x, ldx, rows, y, ldy, y_off + col, self.k, n, accumulate)


class ClRuntime:
    """Context, queue and program for one OpenCL device (shared by every model loaded on it)."""

    def __init__(self, device, cache: ProgramCache | None, gemv_shape: tuple[int, int] | None = None):
        import pyopencl as cl

        self.cl = cl
        self.device = device
        cpu = bool(device.type & cl.device_type.CPU)
        lanes, rows = self.gemv_shape = gemv_shape or GEMV_SHAPES["CPU" if cpu else "GPU"]
        self.gemm_kind = GEMM_KINDS["CPU" if cpu else "GPU"]
        if lanes & (lanes - 1) or lanes * rows > min(GEMV_MAX_WG, device.max_work_group_size):
            raise BackendError(f"GEMV work-group {lanes}x{rows}: lanes must be a power of two and lanes*rows <= {min(GEMV_MAX_WG, device.max_work_group_size)}")
        if device.max_work_group_size < TILE * TILE:
            raise BackendError(f"{device.name}: max work-group size {device.max_work_group_size} < {TILE * TILE} needed by the GEMM kernel")
        self.ctx = cl.Context([device])
        self.queue = cl.CommandQueue(self.ctx, device)
        self.program, self.build_info = build_program(self.ctx, device, kernel_source(), BUILD_OPTIONS, cache)
        log.info("OpenCL program for %s: %s in %.3f s", device.name, self.build_info.how, self.build_info.seconds)
        i32, f32 = np.int32, np.float32
        mat = [None, None, None, None, i32, None, i32, i32, i32, i32]
        self._k = {}
        for fmt in sorted(set(FORMATS.values())):
            self._kernel(f"gemv_{fmt}", mat + [i32])
            self._kernel(f"gemm_{fmt}", mat + [i32, i32])
            self._kernel(f"gemm_rt_{fmt}", mat + [i32, i32])
        self._kernel("rms_norm", [None, i32, None, None, i32, f32, i32])
        self._kernel("head_norm", [None, i32, i32, i32, None, None, f32])
        self._kernel("add_bias", [None, i32, None])
        self._kernel("rope", [None, i32, i32, i32, i32, None, None, i32])
        self._kernel("kv_store", [None, i32, i32, i32, None, None, i32, i32])
        self._kernel("attention", [None, i32, None, None, None, i32, i32, i32, i32, i32, i32, f32, i32])
        self._kernel("swiglu", [None, None, i32])
        self._kernel("geglu", [None, None, i32])

    def _kernel(self, name: str, dtypes) -> None:
        k = self.cl.Kernel(self.program, name)
        k.set_scalar_arg_dtypes(dtypes)
        self._k[name] = k

    # --- buffers -------------------------------------------------------------------------------

    def upload(self, a: np.ndarray):
        mf = self.cl.mem_flags
        a = np.ascontiguousarray(a)
        return self.cl.Buffer(self.ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=a) if a.nbytes else self.empty(4)

    def empty(self, nbytes: int):
        return self.cl.Buffer(self.ctx, self.cl.mem_flags.READ_WRITE, size=max(int(nbytes), 4))

    def write(self, buf, a: np.ndarray) -> None:
        self.cl.enqueue_copy(self.queue, buf, np.ascontiguousarray(a, np.float32), is_blocking=True)

    def read(self, out: np.ndarray, buf) -> np.ndarray:
        self.cl.enqueue_copy(self.queue, out, buf, is_blocking=True)
        return out

    def finish(self) -> None:
        self.queue.finish()

    # --- kernels -------------------------------------------------------------------------------

    def matmul(self, fmt, qb, db, mb, x, ldx, rows, y, ldy, y_off, k, n, accumulate) -> None:
        acc = int(bool(accumulate))
        if rows <= GEMV_MAX_ROWS:
            lanes, per = self.gemv_shape
            g = (lanes, -(-n // per) * per, rows)
            self._k[f"gemv_{fmt}"](self.queue, g, (lanes, per, 1), qb, db, mb, x, ldx, y, ldy, y_off, k, n, acc)
        elif self.gemm_kind == "rows":
            self._k[f"gemm_rt_{fmt}"](self.queue, (n, -(-rows // RT_ROWS)), None, qb, db, mb, x, ldx, y, ldy, y_off, k, n, rows, acc)
        else:
            g = (-(-n // TILE) * TILE, -(-rows // TILE) * TILE)
            self._k[f"gemm_{fmt}"](self.queue, g, (TILE, TILE), qb, db, mb, x, ldx, y, ldy, y_off, k, n, rows, acc)

    def rms_norm(self, x, row0: int, w, out, rows: int, n: int, eps: float, accumulate: bool = False) -> None:
        """out[:rows] (+)= RMSNorm(x[row0:row0 + rows]) * w (rows of n floats)."""
        self._k["rms_norm"](self.queue, (RED_LS, rows), (RED_LS, 1), x, row0, w, out, n, eps, int(bool(accumulate)))

    def head_norm(self, qkv, ld: int, rows: int, n_q: int, n_k: int, hd: int, wq, wk, eps: float) -> None:
        """In place: RMS norm of each of the first n_q (with wq) + n_k (with wk) heads of hd floats of each row."""
        if hd > MAX_HD:
            raise UnsupportedModelError("", f"the OpenCL QK-norm kernel needs head_dim <= {MAX_HD}, got {hd}")
        self._k["head_norm"](self.queue, (RED_LS, n_q + n_k, rows), (RED_LS, 1, 1), qkv, ld, hd, n_q, wq, wk, eps)

    def add_bias(self, y, ld: int, b, rows: int, n: int) -> None:
        self._k["add_bias"](self.queue, (n, rows), None, y, ld, b)

    def rope(self, qkv, ld: int, rows: int, n_heads: int, hd: int, rope_dim: int, neox: bool, cs, sn, pos0: int) -> None:
        self._k["rope"](self.queue, (rope_dim // 2, n_heads, rows), None, qkv, ld, hd, rope_dim, int(neox), cs, sn, pos0)

    def kv_store(self, qkv, ld: int, rows: int, nq: int, n_head_kv: int, hd: int, kc, vc, n_ctx: int, pos0: int) -> None:
        self._k["kv_store"](self.queue, (hd, n_head_kv, rows), None, qkv, ld, nq, n_head_kv * hd, kc, vc, n_ctx, pos0)

    def attention(
        self, qkv, ld: int, rows: int, kc, vc, out, ldo: int, n_head: int, n_head_kv: int, hd: int, n_ctx: int, pos0: int, scale: float, window: int = 0
    ) -> None:
        if hd > MAX_HD or hd % 4:
            raise UnsupportedModelError("", f"the OpenCL attention kernel needs head_dim <= {MAX_HD} and a multiple of 4, got {hd}")
        self._k["attention"](self.queue, (RED_LS * n_head, rows), (RED_LS, 1), qkv, ld, kc, vc, out, ldo, n_head, n_head_kv, hd, n_ctx, pos0, scale, window)

    def swiglu(self, gu, out, rows: int, ff: int) -> None:
        self._k["swiglu"](self.queue, (ff, rows), None, gu, out, ff)

    def geglu(self, gu, out, rows: int, ff: int) -> None:
        self._k["geglu"](self.queue, (ff, rows), None, gu, out, ff)

    def gated(self, gu, out, rows: int, ff: int, activation: str) -> None:
        """act(gate) * up of a fused gate|up output: "silu" (SwiGLU) or "gelu_tanh" (GeGLU)."""
        (self.geglu if activation == "gelu_tanh" else self.swiglu)(gu, out, rows, ff)
