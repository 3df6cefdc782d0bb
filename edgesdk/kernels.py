"""Quantized matmul kernels: C (cffi, SIMD chosen at run time) with a numpy reference.

``EDGESDK_KERNELS=auto|c|numpy`` picks the implementation (auto: C if it built, else numpy
with a warning; c: KernelError at import if the C kernels are missing; other values: a
warning, then auto).  ``EDGESDK_THREADS`` sets the initial pool size.

SIMD paths: each native path (``amx``, ``avx512vnni``, ``avxvnni``, ``avx2``, ``neon``, ``portable``)
needs a set of CPU features, checked one by one (CPUID bits and the OS's register-state saving on
x86, and for AMX Linux granting the process tile state; HWCAP on Arm); the best runnable one is used.  ``EDGESDK_SIMD=<path>|auto`` or
``set_simd(path)`` asks for a path: one the CPU cannot run is never executed -- a warning names
the missing features and the best runnable path runs instead; ``info()`` says what was asked and
what runs.  The fused LLM loop (``edgesdk._cllm``) uses no feature the kernels' path does not.

int8-activation path (act="int8", default): x is quantized per 32-element block to int8
(scale = amax/127, round-half-even) and multiplied with integer dot products; for K-quant weights
(256-element super-blocks) per 256 elements, as llama.cpp's Q8_K does, so a super-block's sub-block
dots add up in integers. ``_kernels_ref`` computes the same arithmetic in float64.  Versus the
exact result its error per output is at most sum over blocks of (dx_b / 2) * sum|W[n, b]|
(|rounding| <= half a step per activation); versus the numpy reference of the same
arithmetic (``_kernels_ref.matmul_int8_exact``) it differs only by float32 rounding,
<= 1e-5 * sum_k |x_k| * (d * (code + offset) + |m|) (codes and offset are summed apart).
act="f32" is exact up to float32 rounding (<= 1e-5 relative to |x| @ |W|.T).

Results do not depend on the thread count: every output element is computed by one thread
with the same instruction sequence.  Non-finite activations raise KernelError (checked
in C while the activations are prepared, so it costs nothing extra).  Weights cannot hold
NaN/Inf through ``quantize``/``from_gguf`` (QuantizationError); a hand-built QuantizedTensor
with non-finite scales gives non-finite outputs, never an out-of-bounds access (array
sizes are validated when the tensor is built).
"""

from __future__ import annotations

import logging
import os
import time

import attrs

import numpy as np

from . import _env
from . import _kernels_ref as ref
from ._errors import KernelError
from .quant._buffer import weight_buffer
from .quant._tensor import BLOCKS, QuantizedTensor

__all__ = [
    "KernelInfo",
    "ReadLoop",
    "available",
    "fastest_read",
    "get_threads",
    "info",
    "matmul",
    "memory_read_gbs",
    "quantize_activations",
    "set_simd",
    "set_threads",
]

log = logging.getLogger(__name__)

try:
    from . import _ckernels as _ck

    _lib, _ffi = _ck.lib, _ck.ffi
    _build_error = None
except ImportError as e:  # the C extension did not build here
    _ck = _lib = _ffi = None
    _build_error = str(e)


def _choose_impl() -> str:
    want = _env.get("EDGESDK_KERNELS")  # a typo is a warning, then auto: `import edgesdk` must not fail
    if want == "numpy":
        return "numpy"
    if _lib is None:
        if want == "c":
            raise KernelError(f"EDGESDK_KERNELS=c but the C kernels are not built: {_build_error}")
        log.warning("edgesdk C kernels unavailable (%s); using the numpy reference kernels", _build_error)
        return "numpy"
    return "c"


_impl = _choose_impl()


def _default_threads() -> int:
    env = _env.get("EDGESDK_THREADS")
    if env is not None:
        return env
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


_threads = 1


def _names(mask: int) -> tuple[str, ...]:
    """Feature names of a mask over ek_cpu_feature_name."""
    out, i = [], 0
    while (name := _lib.ek_cpu_feature_name(i)) != _ffi.NULL:
        if mask >> i & 1:
            out.append(_ffi.string(name).decode())
        i += 1
    return tuple(out)


def _path_names() -> tuple[str, ...]:
    """Every SIMD path the C kernels know, in order of preference (one per table entry in C)."""
    return tuple(_ffi.string(_lib.ek_path_name(i)).decode() for i in range(_lib.ek_path_count()))


def _why_not(i: int) -> str:
    """Why path i cannot run here ("" when it can)."""
    if _lib.ek_path_runnable(i):
        return ""
    import platform

    name = _ffi.string(_lib.ek_path_name(i)).decode()
    if not _lib.ek_path_built(i):
        return f"SIMD path {name!r} is not built for this architecture ({platform.machine()})"
    missing = _names(_lib.ek_path_needs(i) & ~_lib.ek_cpu_features())
    return f"SIMD path {name!r} needs {', '.join(missing)}, which this CPU (or its OS) does not provide"


# what was last asked for (EDGESDK_SIMD or set_simd) and why it is not what runs
_asked: tuple[str | None, str] = (None, "")


def set_simd(name: str) -> str:
    """Ask for a SIMD path ("auto": the best runnable); returns the path now in effect.

    A known path this CPU cannot run is never executed: a warning names the missing features and
    the best runnable path is used.  An unknown name raises KernelError listing the valid ones.
    """
    global _asked
    if _impl != "c":
        return "none"
    paths = _path_names()
    key = str(name).strip().lower()
    if key != "auto" and key not in paths:
        raise KernelError(f"unknown SIMD path {name!r}; valid: auto, {', '.join(paths)}")
    i = _lib.ek_path_best() if key == "auto" else paths.index(key)
    note = _why_not(i)
    got = _lib.ek_path_set(i)
    if note:
        note += f"; running {paths[got]!r}"
        log.warning("%s", note)
    _asked = (None if key == "auto" else key, note)
    return paths[got]


def _path_needs() -> int:
    """Feature mask of the path in effect: what the fused LLM loop's SIMD code may use."""
    return _lib.ek_path_needs(_lib.ek_path_get()) if _impl == "c" else 0


if _impl == "c" and (_env_simd := _env.get("EDGESDK_SIMD")):
    try:
        set_simd(_env_simd)
    except KernelError as e:  # a typo in the environment must not make `import edgesdk` fail
        log.warning("EDGESDK_SIMD: %s; using the best runnable path", e)
        _asked = (_env_simd, str(e))


# the read plans of decode-sized matmuls, as the environment table names them (less "auto"), in the
# order of ek_read_set's indices (ekern.h: 0 paired, 1 single)
READ_PLANS = tuple(c for c in _env.VARIABLES["EDGESDK_DECODE_READ"].choices if c != "auto")


def set_decode_read(name: str) -> str:
    """How decode-sized matmuls (M <= 2) read their weights on x86; returns the plan now in effect.

    ``"paired"``: the AVX-512 tiles take two row groups at once (two weight streams), each
    prefetched far into L2 and near into L1. ``"single"``: one row group per tile (one stream),
    prefetched far ahead only. ``"auto"``: single on AMD and Hygon CPUs (their prefetch hints all
    fill L1, and one stream read 90-99 % of a like DRAM read on a Zen 5 VM against 76-102 % paired),
    paired elsewhere (measured faster on a Xeon). Both give the same bits; other paths (NEON,
    portable) ignore it. An unknown name raises KernelError listing the valid ones.
    """
    key = str(name).strip().lower()
    if key != "auto" and key not in READ_PLANS:
        raise KernelError(f"unknown decode read plan {name!r}; valid: auto, {', '.join(READ_PLANS)}")
    if _impl != "c":
        return "none"
    return READ_PLANS[_lib.ek_read_set(-1 if key == "auto" else READ_PLANS.index(key))]


if _impl == "c":  # _env.get gives a choice of the table (a bad value: a warning, then auto)
    set_decode_read(_env.get("EDGESDK_DECODE_READ"))


@attrs.frozen
class KernelInfo:
    impl: str  # "c" | "numpy"
    simd: str  # SIMD path in use ("none" for numpy)
    simd_detected: str  # best path this CPU can run
    threads: int
    amx_usable: bool  # AMX tiles usable: CPU, XCR0 and the OS's grant (the amx path needs them)
    build: str
    reason: str = ""  # why impl is "numpy", when it is
    simd_runnable: tuple[str, ...] = ()  # every path this CPU can run, best first
    simd_requested: str | None = None  # what EDGESDK_SIMD / set_simd asked for, if anything
    simd_note: str = ""  # why the requested path is not the one running
    cpu_features: tuple[str, ...] = ()  # features detected (CPU and OS), by GCC target name
    llm_loop: str = "none"  # SIMD path of the fused LLM loop, "none" when not built
    decode_read: str = "none"  # read plan of decode-sized matmuls (set_decode_read)

    def describe(self) -> str:
        """The kernels' lines of `edgesdk devices`: what runs, what was asked, what could run."""
        if self.impl != "c":
            return f"kernels: numpy reference ({self.reason})"
        amx = "usable" if self.amx_usable else "not usable"
        lines = [
            f"kernels: C, SIMD path {self.simd} (runnable here: {', '.join(self.simd_runnable)}), fused LLM loop {self.llm_loop}, "
            f"{self.threads} threads, decode reads {self.decode_read}"
        ]
        if self.simd_requested:
            lines.append(f"asked {self.simd_requested}: {self.simd_note or 'running it'}")
        lines.append(f"CPU features: {' '.join(self.cpu_features) or 'baseline x86-64/arm64'}; AMX {amx}; {self.build}")
        return "\n  ".join(lines)


def available() -> bool:
    """True when the C kernels are built and selected."""
    return _impl == "c"


def _llm_loop() -> str:
    try:
        from . import _cllm
    except ImportError:
        return "none"
    return _cllm.ffi.string(_cllm.lib.llm_path(_path_needs())).decode()


def info() -> KernelInfo:
    if _impl != "c":
        why = "EDGESDK_KERNELS=numpy" if _lib is not None else f"C kernels not built: {_build_error}"
        return KernelInfo("numpy", "none", "none", 1, False, "numpy " + np.__version__, why)
    paths = _path_names()
    return KernelInfo(
        impl="c",
        simd=paths[_lib.ek_path_get()],
        simd_detected=paths[_lib.ek_path_best()],
        threads=_threads,
        amx_usable=bool(_lib.ek_amx_usable()),
        build=_ffi.string(_lib.ek_build_info()).decode(),
        simd_runnable=tuple(p for i, p in enumerate(paths) if _lib.ek_path_runnable(i)),
        simd_requested=_asked[0],
        simd_note=_asked[1],
        cpu_features=_names(_lib.ek_cpu_features()),
        llm_loop=_llm_loop(),
        decode_read=READ_PLANS[_lib.ek_read_get()],
    )


def set_threads(n: int) -> None:
    """Size of the persistent worker pool (caller included) used by default.

    The workers start with the first kernel call that uses them, so importing edgesdk starts none.
    """
    global _threads
    n = int(n)
    if n < 1:
        raise KernelError(f"thread count must be >= 1, got {n}")
    if _impl == "c":
        _lib.ek_set_threads(n)
    _threads = n


def get_threads() -> int:
    return _threads


#: Prefetch distances (bytes) the bandwidth probe tries besides plain loads: how far ahead reads
#: best is a property of the CPU. Measured on a Xeon VM (AMX), 1 thread: plain 16.0 GB/s, 512 B
#: ahead 18.6, 1 KiB 19.1, 2 KiB 17.8, 4 KiB 16.5.
PROBE_PREFETCH = (0, 512, 1024, 2048)


@attrs.frozen
class ReadLoop:
    """One way this CPU reads memory: a read loop of the SIMD path (``loop``, one per load width)
    with software prefetch ``prefetch`` bytes ahead (0: plain loads), and the GB/s it measured.
    :func:`fastest_read` finds the fastest; :meth:`read` runs it, so a benchmark can time a read of
    the bytes a kernel call read right after that call: both see the machine in the same state."""

    loop: int
    prefetch: int
    gbs: float

    def read(self, buf: np.ndarray, offset: int = 0, nbytes: int | None = None, threads: int | None = None) -> int:
        """Read ``nbytes`` (default: to the end) of C-contiguous ``buf`` from byte ``offset`` with
        ``threads`` workers (default: the pool size); returns the XOR of its 64-bit words (nothing to
        optimise away)."""
        if _impl != "c":
            raise KernelError("reading memory with the probe's loops needs the C kernels (" + info().simd_note + ")")
        if not isinstance(buf, np.ndarray) or not buf.flags.c_contiguous:
            raise KernelError(f"buf must be a C-contiguous numpy array, got {type(buf).__name__}")
        n = buf.nbytes - offset if nbytes is None else nbytes
        if offset < 0 or n < 0 or offset + n > buf.nbytes:
            raise KernelError(f"bytes {offset} .. {offset + n} are outside the {buf.nbytes}-byte buffer")
        if not 0 <= self.loop < _lib.ek_stream_loops() or self.prefetch < 0:
            raise KernelError(f"read loop {self.loop} (prefetch {self.prefetch}) is not one of this path's ({_lib.ek_stream_loops()} loops)")
        return self._read_at(_ffi.cast("char *", _ffi.from_buffer(buf.reshape(-1).view(np.uint8))) + offset, n, threads)

    def _read_at(self, ptr, n: int, threads: int | None) -> int:
        # unchecked: the probe's timed loop, over a buffer it made itself
        return int(_lib.ek_stream_read(ptr, n, int(threads or _threads), self.loop, self.prefetch))


def fastest_read(threads: int | None = None, set_bytes: int = 1 << 30, passes: int = 3, piece: int = 8 << 20) -> ReadLoop:
    """The fastest :class:`ReadLoop` over the SIMD path's read loops (each load width it has) and
    software prefetch at each distance of :data:`PROBE_PREFETCH`, each timed as the median over
    streaming reads of ``piece`` bytes cycling through a ``set_bytes`` buffer (far larger than any
    cache), with ``threads`` workers (default: the pool size). The fastest read loop known, since on
    some CPUs one core's plain loads leave DRAM idle.

    Timed per piece, as matmuls are timed per call: a preemption on a shared machine spoils one
    sample, not the measurement.
    """
    if _impl != "c":
        raise KernelError("the memory bandwidth probe needs the C kernels (" + info().simd_note + ")")
    if set_bytes < piece or piece < 1 or passes < 1:
        raise KernelError(f"set_bytes ({set_bytes}) must be at least one piece ({piece} bytes), passes ({passes}) at least 1")
    buf = weight_buffer(set_bytes)  # the pages weights get (edgesdk.quant._buffer): a like-for-like limit
    buf[:] = 1  # touched: the pages are resident before timing
    base = _ffi.cast("char *", _ffi.from_buffer(buf))
    best = ReadLoop(0, 0, 0.0)
    for loop in range(_lib.ek_stream_loops()):
        for pf in PROBE_PREFETCH:
            how, ts = ReadLoop(loop, pf, 0.0), []
            for _ in range(passes):
                for off in range(0, set_bytes - piece + 1, piece):
                    t = time.perf_counter()
                    how._read_at(base + off, piece, threads)
                    ts.append(time.perf_counter() - t)
            gbs = piece / float(np.median(ts)) / 1e9
            if gbs > best.gbs:
                best = ReadLoop(loop, pf, gbs)
    return best


def memory_read_gbs(threads: int | None = None, set_bytes: int = 1 << 30, passes: int = 3, piece: int = 8 << 20) -> float:
    """Measured DRAM read bandwidth in GB/s: :func:`fastest_read`'s. The physical limit of a
    memory-bound matmul, so benchmarks state their speed as a share of it."""
    return fastest_read(threads, set_bytes, passes, piece).gbs


def _desc(w: QuantizedTensor):
    d = w._kcache.get("desc")
    if d is None and w.layout == BLOCKS:
        d = _ffi.new("ek_weight *")
        keep = [_ffi.from_buffer("unsigned char[]", w.qdata)]
        d.q, (d.n, d.k), d.gtype = keep[0], w.shape, w.type_row.code
        if w.rows8:
            fields = np.array(w.type_row.rows8, np.uint16).reshape(-1)
            keep.append(_ffi.from_buffer("unsigned short[]", fields))
            d.rows8, d.fields, d.nfields = 1, keep[-1], len(w.type_row.rows8)
        w._kcache["desc"], w._kcache["keep"] = d, keep
    elif d is None:
        n, k = w.shape
        s = -(-k // 32)
        spb = s if w.block_size >= k else w.block_size // 32
        d = _ffi.new("ek_weight *")
        keep = [_ffi.from_buffer("unsigned char[]", w.qdata), _ffi.from_buffer("unsigned short[]", w.scales.view(np.uint16))]
        d.q, d.d = keep
        if w.mins is not None:
            keep.append(_ffi.from_buffer("unsigned short[]", w.mins.view(np.uint16)))
            d.m = keep[-1]
        d.n, d.k, d.bits, d.nblk, d.spb, d.offset = n, k, w.bits, w.n_blocks, spb, w.offset
        w._kcache["desc"] = d
        w._kcache["keep"] = keep
    return d


def _parts_desc(qts: list[QuantizedTensor]):
    """One ek_weight for a fused projection whose parts differ in layout or type (stacked rows):
    what the fused LLM loop calls as one matmul. Keeps the parts' descriptors alive."""
    n, k = sum(q.shape[0] for q in qts), qts[0].shape[1]
    if any(q.shape[1] != k for q in qts):
        raise KernelError("fused parts must share K")
    parts = _ffi.new("ek_weight[]", len(qts))
    for i, q in enumerate(qts):
        parts[i] = _desc(q)[0]
    d = _ffi.new("ek_weight *")
    d.n, d.k, d.parts, d.nparts = n, k, parts, len(qts)
    return d, (parts, qts)


_F32 = np.dtype(np.float32)
_from_buffer = _ffi.from_buffer if _ffi is not None else None

_ERR = {-1: "invalid arguments", -2: "activations contain NaN or Inf", -3: "out of memory"}


def matmul(x, w: QuantizedTensor, *, act: str = "int8", out: np.ndarray | None = None, threads: int | None = None):
    """y = x @ W.T for a quantized weight W (N, K); x float32 (M, K) or (K,), C-contiguous.

    act: "int8" (activations quantized per 32-block, integer dot products; fast) or
    "f32" (exact).  out: optional float32 C-contiguous (M, N) (or (N,) for 1-D x) buffer,
    reused to avoid a per-call allocation.  threads: override the pool size for this call.
    """
    # this runs for every linear layer of every decoded token: checks are ordered so the
    # valid case costs a handful of attribute reads (~1 us with the C call)
    if type(w) is not QuantizedTensor and not isinstance(w, QuantizedTensor):
        raise KernelError(f"w must be a QuantizedTensor, got {type(w).__name__}")
    if type(x) is not np.ndarray or x.dtype != _F32:
        if not isinstance(x, np.ndarray) or x.dtype != _F32:
            raise KernelError(f"x must be a float32 numpy array, got {getattr(x, 'dtype', type(x).__name__)}")
    fl = x.flags
    if not (fl.c_contiguous and fl.aligned):
        raise KernelError("x must be C-contiguous and aligned (np.ascontiguousarray(x, np.float32))")
    n, k = w.shape
    shape = x.shape
    if len(shape) == 1:
        m, oshape = 1, (n,)
    elif len(shape) == 2:
        m, oshape = shape[0], (shape[0], n)
    else:
        raise KernelError(f"x must be 1-D or 2-D, got shape {shape}")
    if shape[-1] != k:
        raise KernelError(f"x has {shape[-1]} features but the weight has K={k}")
    if act == "int8":
        a8 = 1
    elif act == "f32":
        a8 = 0
    else:
        raise KernelError(f"act must be 'int8' or 'f32', got {act!r}")
    if out is None:
        out = np.empty(oshape, _F32)
    elif type(out) is not np.ndarray or out.dtype != _F32 or out.shape != oshape or not out.flags.c_contiguous or not out.flags.writeable:
        raise KernelError(f"out must be a writable C-contiguous float32 array of shape {oshape}")
    if m == 0:
        return out
    if _impl != "c":
        if not np.isfinite(x).all():
            raise KernelError(_ERR[-2])
        y = ref.matmul_int8(x, w) if a8 else ref.matmul_f32(x, w)
        out[...] = y.reshape(oshape)
        return out
    if threads is None:
        nt = 0
    else:
        nt = int(threads)
        if nt < 1:
            raise KernelError(f"threads must be >= 1, got {threads}")
    d = w._kcache.get("desc") or _desc(w)
    rc = _lib.ek_matmul(d, _from_buffer("float[]", x), m, _from_buffer("float[]", out), a8, nt)
    if rc:
        raise KernelError(_ERR.get(rc, f"kernel error {rc}"))
    return out


def quantize_activations(x: np.ndarray, block: int = 32):
    """The int8 activation quantizer of the fast path: (xq (M, Kp) int8, dx (M, S), cs (M, K/32)).

    block: elements per scale, 32 (every matmul but K-quants') or 256 (K-quant weights; K a multiple
    of 256), as in ``edgesdk._kernels_ref.quantize_activations``."""
    if block not in (32, 256):
        raise KernelError(f"block must be 32 or 256, got {block}")
    x2 = np.ascontiguousarray(x, np.float32).reshape(-1, np.shape(x)[-1])
    m, k = x2.shape
    if block == 256 and k % 256:
        raise KernelError(f"block 256 needs K to be a multiple of 256, got {k}")
    if _impl != "c":
        xq, dx, cs = ref.quantize_activations(x2, block)
        return (xq, dx, cs) if block == 32 else (xq, dx, _sums32(xq, dx))
    s = -(-k // block)
    xq = np.empty((m, s * block), np.int8)
    dx = np.empty((m, s), np.float32)
    cs = np.empty((m, s * block // 32), np.float32)
    fn = _lib.ek_quantize_act if block == 32 else _lib.ek_quantize_act256
    rc = fn(_ffi.from_buffer("float[]", x2), m, k, _ffi.from_buffer("signed char[]", xq), _ffi.from_buffer("float[]", dx), _ffi.from_buffer("float[]", cs))
    if rc:
        raise KernelError(_ERR.get(rc, f"kernel error {rc}"))
    return xq, dx, cs


def rows8_native(qtype) -> bool:
    """Whether the kernels in effect read ``qtype`` fastest with rows interleaved 8 at a time
    (``QuantizedTensor.rows8``): the x86 SIMD paths for Q4_K, Q5_K, Q6_K and Q5_0. Elsewhere (the
    portable and NEON paths, the numpy implementation) the file's row order is the faster one."""
    from .quant._types import quant_type

    return _impl == "c" and bool(_lib.ek_rows8_native(quant_type(qtype).code))


def _sums32(xq: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """dx * sum(xq) per 32 elements, for 256-element scales (what the C quantizer's cs holds)."""
    m = xq.shape[0]
    sums = xq.reshape(m, -1, 32).sum(-1, dtype=np.int32).astype(np.float32)
    return (np.repeat(dx, 8, axis=1) * sums).astype(np.float32)


if _impl == "c":
    set_threads(_default_threads())
