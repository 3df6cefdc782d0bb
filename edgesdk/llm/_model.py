"""The decoder-only transformer forward pass over a preallocated KV cache.

One ``forward(ids, cache)`` serves prefill (T tokens, GEMM), decode (T = 1, GEMV) and speculative
verification (a few tokens). Every architectural choice comes from :class:`ModelConfig`.
"""

from __future__ import annotations

import logging
import mmap
import os

import numpy as np

from .. import _env, _progress
from .._errors import ContextLengthError, GenerationError, ModelFormatError
from ._gguf import GGUFFile, ModelConfig
from ._lora import EMBEDDING
from ._weights import Embedding, Linear, check_impl, kernel_impl, vector

__all__ = ["DEFAULT_KV_DTYPE", "KV_DTYPES", "KVCache", "TokenCache", "Transformer"]

log = logging.getLogger(__name__)

# numpy path: up to this many tokens per forward, attention runs row by row with exactly the shapes
# of a one-token decode step. With int8 activations, a last-bit difference (another BLAS blocking,
# extra masked zeros in a softmax sum) can flip a rounding and, 30 layers later, a near-tie argmax;
# row-by-row keeps speculative verification bit-identical to plain decoding. (The fused C loop is
# row-by-row for every chunk size.)
EXACT_ROWS = 64

# Most tokens one forward call appends (the fused loop's LLM_MAX_ROWS; longer inputs are split). A
# sliding-window layer's cache is a ring of window + MAX_ROWS positions: a call stores all its keys
# before attending, and its first query still needs the window before it.
MAX_ROWS = 512

#: How a KV cache stores keys/values (``kv_dtype``), the one list of valid values. "f32": as
#: computed. "f16": IEEE half (round to nearest even), half the memory. "q8_0": llama.cpp's Q8_0
#: per 32 values of a head row (an fp16 scale and 32 int8 codes, 34 bytes: 0.27x of f32).
#: Attention reads every type back as float32; the fused C loop stores the same bits as numpy.
KV_DTYPES = ("f32", "f16", "q8_0")
#: The CPU forward pass's default: llama.cpp's too. Its perplexity cost is nil (benchmarks/README.md,
#: "KV-cache storage": +0.001% / -0.004% with exact activations), it halves the cache, and attention,
#: which reads the whole cache per token, runs faster at long contexts.
DEFAULT_KV_DTYPE = "f16"
QK8_0 = 32
#: llama.cpp's block_q8_0, unpadded: d = amax / 127 as fp16, codes = roundf(x * (1 / d)).
Q8_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "i1", (QK8_0,))])


def check_kv_dtype(kv_dtype, head_dim: int | None = None) -> str:
    """``kv_dtype`` if it is valid (for a model of this ``head_dim``, when given); else GenerationError."""
    if not isinstance(kv_dtype, str) or kv_dtype not in KV_DTYPES:
        raise GenerationError(f"kv_dtype must be one of {', '.join(map(repr, KV_DTYPES))}, got {kv_dtype!r}")
    if kv_dtype == "q8_0" and head_dim is not None and head_dim % QK8_0:
        raise GenerationError(f"kv_dtype 'q8_0' quantizes blocks of {QK8_0} values of a head; this model's head_dim {head_dim} is not a multiple of {QK8_0}")
    return kv_dtype


def quantize_q8_0(x: np.ndarray) -> np.ndarray:
    """Rows (..., n) of float32, n a multiple of 32, as (..., n / 32) Q8_0 blocks, bit for bit llama.cpp's."""
    xb = np.asarray(x, np.float32).reshape(*np.shape(x)[:-1], -1, QK8_0)
    d = np.abs(xb).max(axis=-1) / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
    v = xb * inv[..., None]
    r = np.trunc(v)
    r += np.sign(v) * (np.abs(v - r) >= 0.5)  # C's roundf: halves away from zero (np.rint: to even)
    out = np.empty(xb.shape[:-1], Q8_0_BLOCK)
    out["d"] = d
    out["qs"] = np.nan_to_num(r, nan=0.0)
    return out


# Per kv_dtype: the numpy dtype of the cache arrays and how many head_dim values one element holds.
_STORAGE = {"f32": (np.dtype(np.float32), 1), "f16": (np.dtype(np.float16), 1), "q8_0": (Q8_0_BLOCK, QK8_0)}


def encode_kv(x: np.ndarray, kv_dtype: str) -> np.ndarray:
    """Float32 rows (..., head_dim) as a cache of ``kv_dtype`` stores them (f32: ``x`` itself)."""
    dtype = _STORAGE[kv_dtype][0]
    return quantize_q8_0(x) if dtype == Q8_0_BLOCK else np.asarray(x, np.float32).astype(dtype, copy=False)


def decode_kv(a: np.ndarray) -> np.ndarray:
    """Stored rows back as float32 (..., head_dim), exactly (every stored value is a float32), by
    the array's own dtype: a cache is anything holding k/v arrays (test_opencl passes a namespace)."""
    if a.dtype == Q8_0_BLOCK:
        return (a["qs"].astype(np.float32) * a["d"].astype(np.float32)[..., None]).reshape(*a.shape[:-1], -1)
    return a.astype(np.float32, copy=False)


def _lazy_zeros(shape, dtype=np.float32) -> np.ndarray:
    """A zero array whose memory is committed 4 KiB at a time, as it is written.

    Each (layer, head) row of the cache is touched at its first positions only; with transparent
    huge pages every touch would commit 2 MiB, i.e. the whole cache at the first token.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    try:
        mm = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_NOHUGEPAGE"):
            mm.madvise(mmap.MADV_NOHUGEPAGE)
    except (OSError, ValueError, AttributeError):  # not Linux/BSD: calloc pages are lazy enough
        return np.zeros(shape, dtype)
    return np.frombuffer(mm, dtype).reshape(shape)


class TokenCache:
    """What the generation engine needs of a KV cache, wherever its keys/values live.

    ``tokens`` are the ids whose keys/values are stored: a new prompt sharing a prefix with them
    reuses that prefix instead of recomputing it. ``adapter`` is the LoRA adapter (a bound one, see
    :meth:`Transformer.set_adapter`) they were computed with, None for the base model: binding one
    empties the cache, so keys/values are never reused across adapters.
    """

    adapter = None

    def __init__(self, n_ctx: int):
        self.n_ctx = n_ctx
        self.tokens: list[int] = []

    def __len__(self) -> int:
        return len(self.tokens)

    def truncate(self, n: int) -> None:
        del self.tokens[n:]

    def common_prefix(self, ids) -> int:
        n = 0
        for a, b in zip(self.tokens, ids):
            if a != b:
                break
            n += 1
        return n


class KVCache(TokenCache):
    """Keys/values of every layer in host memory, allocated once for the whole context.

    A layer attending to the whole context holds ``n_ctx`` positions; a sliding-window layer holds
    only a ring of ``window + MAX_ROWS`` (position p in slot p % capacity). Pages are mapped lazily,
    so a long context costs memory only as it fills. ``kv_dtype`` (:data:`KV_DTYPES`) is how
    ``k[li]``/``v[li]`` hold them: (n_head_kv, capacity, head_dim) float32 or float16, or
    (n_head_kv, capacity, head_dim / 32) :data:`Q8_0_BLOCK`.
    """

    def __init__(self, cfg: ModelConfig, n_ctx: int, kv_dtype: str = DEFAULT_KV_DTYPE):
        super().__init__(n_ctx)
        self.kv_dtype = check_kv_dtype(kv_dtype, cfg.head_dim)
        self.windows = [p.window for p in cfg.layers]
        self.caps = [min(n_ctx, w + MAX_ROWS) if w else n_ctx for w in self.windows]
        dtype, per = _STORAGE[kv_dtype]
        self.k = [_lazy_zeros((cfg.n_head_kv, c, cfg.head_dim // per), dtype) for c in self.caps]
        self.v = [_lazy_zeros((cfg.n_head_kv, c, cfg.head_dim // per), dtype) for c in self.caps]
        self.native = None  # (fused forward, its per-layer C structs) bound to this cache

    def store(self, li: int, at, k: np.ndarray, v: np.ndarray) -> None:
        """Keys/values (n_head_kv, T, head_dim) of layer ``li`` into slots ``at`` (see :func:`_slots`)."""
        self.k[li][:, at] = encode_kv(k, self.kv_dtype)
        self.v[li][:, at] = encode_kv(v, self.kv_dtype)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.k + self.v)

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` positions, or none if a ring has overwritten keys that position n still sees."""
        held = len(self)
        for w, cap in zip(self.windows, self.caps):
            if w and n < held and n - w + 1 < held - cap:
                n = 0
                break
        super().truncate(n)


def _slots(cap: int, p0: int, p1: int):
    """Cache slots of positions p0..p1-1 in a ring of ``cap``: a slice when they do not wrap."""
    a, b = p0 % cap, p0 % cap + (p1 - p0)
    return slice(a, b) if b <= cap else np.arange(p0, p1) % cap


def _rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """RMS norm over the last axis (any leading shape: rows, or rows x heads for QK-norm)."""
    ms = np.einsum("...i,...i->...", x, x)[..., None] / np.float32(x.shape[-1])
    return x * (w / np.sqrt(ms + np.float32(eps)))


def rope_inv_freq(cfg: ModelConfig, rope: int = 0, factors: np.ndarray | None = None) -> np.ndarray:
    """Frequencies (rope_dim / 2,) in float64 of RoPE table ``rope``, divided by ``rope_freqs`` factors if given."""
    base = cfg.ropes[rope][0]
    inv = 1.0 / base ** (np.arange(cfg.rope_dim // 2, dtype=np.float64) * 2.0 / cfg.rope_dim)
    return inv if factors is None else inv / np.asarray(factors, np.float64)


def rope_rotation(cfg: ModelConfig, pos: np.ndarray, rope: int = 0, factors: np.ndarray | None = None) -> np.ndarray:
    """RoPE angles of positions ``pos`` as unit complex64 numbers (T, rope_dim / 2), computed in float64."""
    ang = (np.asarray(pos)[:, None].astype(np.float64) / cfg.ropes[rope][1]) * rope_inv_freq(cfg, rope, factors)[None, :]
    return np.exp(1j * ang).astype(np.complex64)


def _gated(gu: np.ndarray, n_ff: int, activation: str) -> np.ndarray:
    """act(gate) * up of a fused gate|up projection (T, 2 * n_ff): SiLU (SwiGLU) or tanh-GELU (GeGLU)."""
    gate, up = gu[:, :n_ff], gu[:, n_ff:]
    if activation == "gelu_tanh":
        c = np.float32(np.sqrt(2.0 / np.pi))
        act = np.tanh(c * (gate + np.float32(0.044715) * gate * gate * gate))
        act += 1.0
        act *= gate
        act *= np.float32(0.5)
    else:
        act = np.exp(-gate)
        act += 1.0
        np.divide(gate, act, out=act)
    act *= up
    return act


def softcap(logits: np.ndarray, cap: float) -> np.ndarray:
    """Gemma-style logit soft-capping, in place: cap * tanh(logits / cap) (cap 0: unchanged)."""
    if cap:
        np.multiply(np.tanh(logits / np.float32(cap)), np.float32(cap), out=logits)
    return logits


def _expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """GGUF dims (fastest first) of one layer's tensors, from the config: a mismatch is a bad file."""
    d, q, kv, ff, hd = cfg.n_embd, cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim, cfg.n_ff, cfg.head_dim
    shapes = {
        "attn_norm.weight": (d,),
        "ffn_norm.weight": (d,),
        "attn_output.weight": (q, d),
        "ffn_down.weight": (ff, d),
        "attn_q_norm.weight": (hd,),
        "attn_k_norm.weight": (hd,),
        "post_attention_norm.weight": (d,),
        "post_ffw_norm.weight": (d,),
    }
    qkv, gate_up = cfg.arch.qkv, cfg.arch.gate_up
    for names, rows in ((qkv, (q, kv, kv) if len(qkv) == 3 else (q + 2 * kv,)), (gate_up, (ff, ff) if len(gate_up) == 2 else (2 * ff,))):
        shapes.update({f"{n}.weight": (d, r) for n, r in zip(names, rows)})
        shapes.update({f"{n}.bias": (r,) for n, r in zip(names, rows)})
    return shapes


def layer_tensor(g: GGUFFile, i: int, n: str, kind: str, shapes: dict):
    """Tensor ``blk.<i>.<n>.<kind>``, its dims checked against :func:`_expected_shapes` (a mismatch is a bad file)."""
    tensor = g.tensor(f"blk.{i}.{n}.{kind}")
    dims = tuple(int(x) for x in tensor.shape)
    if dims != shapes[f"{n}.{kind}"]:
        raise ModelFormatError(g.path, f"tensor {tensor.name!r} has dims {dims}, the metadata implies {shapes[f'{n}.{kind}']}")
    return tensor


class LayerNorms:
    """A layer's small fp32 vectors, as its architecture needs them (None where it has none)."""

    def __init__(self, g: GGUFFile, i: int, cfg: ModelConfig, shapes: dict, load=None):
        arch = cfg.arch
        load = load or (lambda a: a)

        def t(n: str, kind: str = "weight"):
            return load(vector(layer_tensor(g, i, n, kind, shapes)))

        self.attn_norm, self.ffn_norm = t("attn_norm"), t("ffn_norm")
        # Q|K|V biases, concatenated like the fused projection's output columns.
        self.bqkv = load(np.concatenate([vector(layer_tensor(g, i, n, "bias", shapes)) for n in arch.qkv])) if arch.attn_bias else None
        self.q_norm = t("attn_q_norm") if arch.qk_norm else None
        self.k_norm = t("attn_k_norm") if arch.qk_norm else None
        self.post_attn_norm = t("post_attention_norm") if arch.post_norms else None
        self.post_ffn_norm = t("post_ffw_norm") if arch.post_norms else None


class _Layer(LayerNorms):
    def __init__(self, g: GGUFFile, i: int, cfg: ModelConfig, impl: str, threads, act: str, shapes: dict):
        super().__init__(g, i, cfg, shapes)

        def lin(names):
            return Linear([layer_tensor(g, i, n, "weight", shapes) for n in names], impl, threads, g.release, act)

        self.plan = cfg.layers[i]
        self.wqkv = lin(cfg.arch.qkv)
        self.wo = lin(("attn_output",))
        self.w_gate_up = lin(cfg.arch.gate_up)
        self.w_down = lin(("ffn_down",))

    @property
    def linears(self) -> tuple[Linear, Linear, Linear, Linear]:
        """The projections in the order the forward passes and :class:`_Bound` index them."""
        return self.wqkv, self.wo, self.w_gate_up, self.w_down


class _Bound:
    """An adapter at one scale, bound to a model: the LoRA terms each of its projections adds.

    ``layers[i]`` holds the terms of layer i's (wqkv, wo, w_gate_up, w_down); ``native`` the fused
    loop's C structs of the same terms, built at the first fused forward.
    """

    def __init__(self, model: "Transformer", adapter, scale: float):
        self.adapter, self.scale = adapter, scale
        terms = lambda lin: adapter.terms(lin.names, lin.sizes, scale)  # noqa: E731
        self.layers = [tuple(terms(lin) for lin in L.linears) for L in model.layers]
        self.head = terms(model.lm_head)
        self.embed = adapter.embedding_term(scale)
        self.native = None


_NO_TERMS = ((), (), (), ())


class _Fused:
    """``edgesdk._cllm.llm_forward`` bound to a model's packed weights (kernels impl).

    The C loop calls ``edgesdk._ckernels.ek_matmul`` through a function pointer on the kernels'
    own weight descriptors, so the two extensions share no link-time symbols.
    """

    def __init__(self, model: "Transformer"):
        from .. import _cllm, kernels

        ffi, self.lib = _cllm.ffi, _cllm.lib
        self._kernels = kernels
        kffi = kernels._ffi
        self.ffi = ffi
        self._keep = []

        def addr(lin) -> object:
            if lin._qt is not None:
                d = kernels._desc(lin._qt)
            else:  # parts of different types: one composite descriptor
                d, keep = kernels._parts_desc(lin._parts)
                self._keep.append((d, keep))
            return ffi.cast("const void *", int(kffi.cast("uintptr_t", d)))

        def floats(a: np.ndarray, kind: str = "float[]"):
            self._keep.append(a)
            return ffi.from_buffer(kind, a)

        cfg = model.cfg
        m = ffi.new("llm_model *")
        m.n_layer, m.n_embd, m.n_ff = cfg.n_layer, cfg.n_embd, cfg.n_ff
        m.n_head, m.n_head_kv, m.head_dim, m.rope_dim = cfg.n_head, cfg.n_head_kv, cfg.head_dim, cfg.rope_dim
        m.rope_neox = int(cfg.arch.rope == "neox")
        m.act_gelu = int(cfg.arch.activation == "gelu_tanh")
        m.rms_eps = cfg.rms_eps
        m.n_rope = len(cfg.ropes)
        m.inv_freq = floats(np.ascontiguousarray(model.inv_freq, np.float64), "double[]")
        m.rope_scale = floats(np.array([sc for _, sc in cfg.ropes], np.float32))
        m.lm_head = addr(model.lm_head)
        m.out_norm = floats(model.out_norm)
        kernel_fn = lambda name, kind: ffi.cast(kind, int(kffi.cast("uintptr_t", kffi.addressof(kernels._lib, name))))  # noqa: E731
        m.matmul = kernel_fn("ek_matmul", "llm_matmul_fn")
        m.parallel = kernel_fn("ek_parallel_for", "llm_parallel_fn")
        m.nthreads = int(model.threads or 0)
        m.nthreads_decode = 0
        m.act_int8 = int(model.activations == "int8")
        m.n_vocab = model.lm_head.n
        self.m = m
        opt = lambda a: ffi.NULL if a is None else floats(a)  # noqa: E731
        self.weights = [
            dict(
                wqkv=addr(L.wqkv),
                wo=addr(L.wo),
                wgu=addr(L.w_gate_up),
                wdown=addr(L.w_down),
                attn_norm=floats(L.attn_norm),
                ffn_norm=floats(L.ffn_norm),
                bqkv=opt(L.bqkv),
                q_norm=opt(L.q_norm),
                k_norm=opt(L.k_norm),
                post_attn_norm=opt(L.post_attn_norm),
                post_ffn_norm=opt(L.post_ffn_norm),
                window=L.plan.window,
                rope=L.plan.rope,
            )
            for L in model.layers
        ]
        self.vocab = model.lm_head.n
        self.max_rows = int(self.lib.LLM_MAX_ROWS)
        chosen = _decode_threads(model)
        m.nthreads_decode = self.tune_decode_threads(model) if chosen is None else chosen

    def tune_decode_threads(self, model: "Transformer", rounds: int = 3) -> int:
        """1 or 0 (the pool) for decode steps' layer matmuls, whichever runs a token faster here.

        Each matmul wakes the kernel pool (~70-120 times per token): on layers that one core streams
        in microseconds that costs more than a second thread saves, on layers whose kernels are
        compute-bound it halves the step. Which one holds depends on the CPU, its memory bandwidth
        and the weight types, so it is measured: a few one-token steps (no LM head) each way.
        """
        import time

        if int(model.threads or self._kernels.get_threads()) <= 1:
            return 1
        cache = KVCache(model.cfg, 2)
        x = model.embed(np.zeros(1, np.int64))
        best = {}
        for _ in range(rounds):
            for nt in (1, 0):
                self.m.nthreads_decode = nt
                cache.tokens = []
                t0 = time.perf_counter()
                self.forward(x.copy(), 1, cache, 1)
                dt = time.perf_counter() - t0
                best[nt] = min(best.get(nt, dt), dt)
        return 1 if best[1] <= best[0] else 0

    def _layers(self, cache: KVCache):
        if cache.native is None or cache.native[0] is not self:
            ffi = self.ffi
            layers = ffi.new("llm_layer[]", len(self.weights))
            keep = []
            for i, fields in enumerate(self.weights):
                L = layers[i]
                for name, value in fields.items():
                    setattr(L, name, value)
                L.k = ffi.from_buffer("char[]", cache.k[i], require_writable=True)
                L.v = ffi.from_buffer("char[]", cache.v[i], require_writable=True)
                L.kv_cap = cache.caps[i]
                keep += [L.k, L.v]
            cache.native = (self, layers, keep)
        return cache.native[1]

    def _lora(self, bound: _Bound):
        """(llm_lora_layer[n_layer], LM head llm_lora[], their count) of ``bound``'s terms, built once."""
        if bound.native is None or bound.native[0] is not self:
            ffi, keep = self.ffi, []

            def terms(ts):
                if not ts:
                    return ffi.NULL, 0
                arr = ffi.new("llm_lora[]", len(ts))
                for i, t in enumerate(ts):
                    a, bt = ffi.from_buffer("float[]", t.pair.a), ffi.from_buffer("float[]", t.pair.bt)
                    c = arr[i]
                    c.a, c.bt, c.scale, c.rank, c.row0 = a, bt, t.scale, t.pair.rank, t.row0
                    c.k, c.n = t.pair.a.shape[1], t.pair.bt.shape[1]
                    keep.extend((a, bt))
                keep.append(arr)
                return arr, len(ts)

            layers = ffi.new("llm_lora_layer[]", len(bound.layers))
            for i, (qkv, o, gu, down) in enumerate(bound.layers):
                L = layers[i]
                (L.qkv, L.n_qkv), (L.o, L.n_o), (L.gu, L.n_gu), (L.down, L.n_down) = terms(qkv), terms(o), terms(gu), terms(down)
            head, n_head = terms(bound.head)
            bound.native = (self, layers, head, n_head, keep)
        return bound.native[1:4]

    def forward(self, x: np.ndarray, T: int, cache: KVCache, start: int) -> np.ndarray:
        from .._errors import KernelError

        # A per-call copy of the model struct: Runner.run may score on several threads, each with its own cache.
        m = self.ffi.new("llm_model *", self.m[0])
        m.layers = self._layers(cache)
        if cache.adapter is not None:
            m.lora, m.lora_head, m.n_lora_head = self._lora(cache.adapter)
        m.cpu_allowed = self._kernels._path_needs()  # the loop's SIMD code follows the kernels' path
        m.n_ctx = cache.n_ctx
        m.kv_type = getattr(self.lib, "LLM_KV_" + cache.kv_dtype.upper())
        out = np.empty((max(T - start, 0), self.vocab), np.float32)
        optr = self.ffi.from_buffer("float[]", out) if out.size else self.ffi.NULL
        rc = self.lib.llm_forward(m, self.ffi.from_buffer("float[]", x), T, len(cache), optr, start)
        if rc:
            raise KernelError(f"fused LLM forward failed (code {rc}: {'non-finite activations' if rc == -2 else 'bad arguments or memory'})")
        return out


def _decode_threads(model: "Transformer") -> int | None:
    """``EDGESDK_LLM_DECODE_THREADS`` (threads for the layer matmuls of steps of <= 16 tokens), or
    None: then the fused loop measures which is faster here (see :meth:`_Fused.tune_decode_threads`)."""
    return _env.get("EDGESDK_LLM_DECODE_THREADS")  # a typo is a warning: it must not stop a model from loading


def _fused_for(model: "Transformer") -> _Fused | None:
    if model.impl != "c" or not _env.get("EDGESDK_LLM_FUSED"):
        return None
    linears = [model.lm_head] + [lin for L in model.layers for lin in (L.wqkv, L.wo, L.w_gate_up, L.w_down)]
    if any(lin._qt is None and not lin._parts for lin in linears):
        return None
    try:
        return _Fused(model)
    except ImportError:
        log.info("edgesdk._cllm is not built (python bindings/build_llm.py); decoding with numpy glue around the kernels")
        return None


class Transformer:
    """Decoder-only transformer over packed weights, every choice read from ``gguf.config()``.

    ``impl`` is "numpy" or "c" (see _weights). ``activations`` ("int8" or "f32") is how the
    kernels see activations: int8 per 32-block is llama.cpp's choice and the fast one; f32 is exact
    and gives the numpy reference's greedy tokens. ``kv_dtype`` (:data:`KV_DTYPES`) is how
    :meth:`new_cache` stores keys/values.
    """

    def __init__(self, gguf: GGUFFile, impl: str | None = None, threads: int | None = None, activations: str = "int8", kv_dtype: str = DEFAULT_KV_DTYPE):
        self.gguf = gguf
        self.cfg = cfg = gguf.config()
        self.kv_dtype = check_kv_dtype(kv_dtype, cfg.head_dim)
        self.impl = check_impl(impl) or kernel_impl()
        self.threads = threads
        self.activations = activations
        # The LM head is the largest tensor: repacking it first keeps its transient copy off the peak RSS.
        # A bar over the repack (the head counts as one layer), shown only when loading takes over a second.
        with _progress.bar(cfg.n_layer + 1, f"loading {os.path.basename(gguf.path)}", unit="layer") as bar:
            head = gguf.tensor("token_embd.weight" if cfg.tied_embeddings else "output.weight")
            self.lm_head = Linear([head], self.impl, threads, gguf.release, activations)
            bar.update(1)
            self.embed = Embedding(gguf.tensor("token_embd.weight"), cfg.embed_scale)
            shapes = _expected_shapes(cfg)
            self.layers = []
            for i in range(cfg.n_layer):
                self.layers.append(_Layer(gguf, i, cfg, self.impl, threads, activations, shapes))
                bar.update(1)
        self.out_norm = vector(gguf.tensor("output_norm.weight"))
        factors = rope_factors(gguf, cfg)
        #: (len(cfg.ropes), rope_dim / 2) float64 RoPE frequencies, one row per table.
        self.inv_freq = np.stack([rope_inv_freq(cfg, r, factors) for r in range(len(cfg.ropes))])
        self._factors = factors
        #: Tokens processed by forward() since load: lets tests check that cached prefixes are not recomputed.
        self.tokens_processed = 0
        self.fused = _fused_for(self)

    def adapter_targets(self) -> dict[str, tuple[str, int, int]]:
        """The base tensors a LoRA adapter may adapt: name -> (kind, k, n) (see :func:`edgesdk.llm._lora.load_lora`)."""
        lins = [self.lm_head] + [lin for L in self.layers for lin in L.linears]
        out = {name: ("matmul", lin.k, n) for lin in lins for name, n in zip(lin.names, lin.sizes)}
        # A tied model's LM head reads token_embd too: an adapter of it adapts the lookup only (PEFT's embedding LoRA).
        out["token_embd.weight"] = (EMBEDDING, self.embed.k, self.embed.n)
        return out

    def set_adapter(self, cache: TokenCache, adapter, scale: float = 1.0) -> None:
        """Compute ``cache``'s tokens with LoRA ``adapter`` (an :class:`edgesdk.llm._lora.LoraAdapter`
        loaded for this model) at ``scale``, or with the base model (None), and empty the cache: its
        keys/values came from another adapter. The weights are untouched (each adapted projection
        adds scale * B (A x)), so switching reloads nothing, and the adapter belongs to this cache
        alone: others (``LLM.logits``, ``perplexity``, another thread's) keep computing with theirs.
        """
        if adapter is not None:
            adapter.check_base(self.cfg.arch.name, self.adapter_targets())
        cache.truncate(0)
        cache.adapter = None if adapter is None else _Bound(self, adapter, float(scale))

    def _embed(self, ids: np.ndarray, cache: TokenCache) -> np.ndarray:
        ad = cache.adapter
        return self.embed(ids, None if ad is None else ad.embed)

    def new_cache(self, n_ctx: int | None = None, kv_dtype: str | None = None) -> KVCache:
        """A cache of ``n_ctx`` positions (the training context at most) stored as ``kv_dtype`` (default: the model's)."""
        return KVCache(self.cfg, min(n_ctx or self.cfg.n_ctx_train, self.cfg.n_ctx_train), kv_dtype or self.kv_dtype)

    def _rope(self, x: np.ndarray, rot: np.ndarray) -> None:
        """Rotate heads of ``x`` (T, H, D) in place: "norm" pairs dims (2i, 2i+1), "neox" pairs (i, i + D/2)."""
        rd = self.cfg.rope_dim
        if self.cfg.arch.rope == "norm":
            # Adjacent float pairs are exactly complex64 numbers: one complex multiply rotates them all.
            z = x[..., :rd].view(np.complex64)
            z *= rot
        else:
            half = rd // 2
            a, b = x[..., :half], x[..., half:rd]
            c, s = rot.real, rot.imag
            a0 = a.copy()
            a[...] = a0 * c - b * s
            b[...] = a0 * s + b * c

    def _attend_one(self, q: np.ndarray, cache: KVCache, li: int, S: int, scale, window: int) -> np.ndarray:
        """Attention of one query row over keys S-window..S-1 (0..S-1 without a window); GQA: query head j reads kv head j // g."""
        cfg = self.cfg
        g = cfg.n_head // cfg.n_head_kv
        s0 = max(0, S - window) if window else 0
        K, V = cache.k[li], cache.v[li]
        at = _slots(K.shape[1], s0, S)
        s = np.matmul(q.reshape(cfg.n_head_kv, g, cfg.head_dim), decode_kv(K[:, at]).transpose(0, 2, 1))  # (nkv, g, S)
        s *= scale
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=-1, keepdims=True)
        return np.matmul(s, decode_kv(V[:, at])).reshape(-1)

    def _attend_batch(self, q: np.ndarray, cache: KVCache, li: int, p0: int, T: int, scale, window: int) -> np.ndarray:
        """Causal (optionally windowed) attention of T query rows at positions p0.. in one batched matmul (prefill)."""
        cfg = self.cfg
        nkv, hd = cfg.n_head_kv, cfg.head_dim
        g = cfg.n_head // nkv
        S = p0 + T
        s0 = max(0, p0 - window + 1) if window else 0  # the first key any of the T queries sees
        K, V = cache.k[li], cache.v[li]
        at = _slots(K.shape[1], s0, S)
        qg = q.reshape(T, nkv, g, hd).transpose(1, 2, 0, 3).reshape(nkv, g * T, hd)
        s = np.matmul(qg, decode_kv(K[:, at]).transpose(0, 2, 1)).reshape(nkv, g, T, S - s0)
        s *= scale
        # Query t (at position p0 + t) sees keys 0..p0 + t, or only the last `window` of them.
        key, qpos = np.arange(s0, S)[None, :], np.arange(p0, S)[:, None]
        hidden = (key > qpos) | ((qpos - key >= window) if window else False)
        s += np.where(hidden, np.float32(-np.inf), np.float32(0.0))
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=-1, keepdims=True)
        o = np.matmul(s.reshape(nkv, g * T, S - s0), decode_kv(V[:, at]))  # (nkv, g*T, hd)
        return o.reshape(nkv, g, T, hd).transpose(2, 0, 1, 3).reshape(T, cfg.n_head * hd)

    def forward(self, ids, cache: KVCache, logits: str = "last") -> np.ndarray:
        """Append ``ids`` to ``cache`` and return logits.

        ``logits``: "last" -> (vocab,) for the last token; "all" -> (T, vocab); an int ``i`` -> (T - i, vocab)
        for positions i.. (perplexity scores only the second half of a chunk, so skip the LM head elsewhere).
        """
        cfg = self.cfg
        ids = np.asarray(ids, np.int64).reshape(-1)
        T = ids.shape[0]
        p0 = len(cache)
        if p0 + T > cache.n_ctx:
            raise ContextLengthError(f"{p0 + T} tokens exceed the context length {cache.n_ctx}")
        if T > MAX_ROWS:
            start = T - 1 if logits == "last" else (0 if logits == "all" else int(logits))
            parts = [self.forward(ids[s : s + MAX_ROWS], cache, max(start - s, 0) if start < s + MAX_ROWS else MAX_ROWS) for s in range(0, T, MAX_ROWS)]
            out = np.concatenate(parts)
            return out[0] if logits == "last" else out
        if self.fused is not None:
            start = T - 1 if logits == "last" else (0 if logits == "all" else int(logits))
            out = softcap(self.fused.forward(self._embed(ids, cache), T, cache, start), cfg.logit_softcap)
            cache.tokens.extend(int(i) for i in ids)
            self.tokens_processed += T
            return out[0] if logits == "last" else out
        out = softcap(self._forward_numpy(ids, cache, logits), cfg.logit_softcap)
        cache.tokens.extend(int(i) for i in ids)
        self.tokens_processed += T
        return out

    def _forward_numpy(self, ids: np.ndarray, cache: KVCache, logits) -> np.ndarray:
        cfg = self.cfg
        T, p0 = ids.shape[0], len(cache)
        pos = np.arange(p0, p0 + T)
        nh, nkv, hd = cfg.n_head, cfg.n_head_kv, cfg.head_dim
        scale = np.float32(1.0 / np.sqrt(hd))
        S = p0 + T
        rots = [rope_rotation(cfg, pos, r, self._factors)[:, None, :] for r in range(len(cfg.ropes))]
        nq, nk = nh * hd, nkv * hd
        ad = cache.adapter
        x = self._embed(ids, cache)
        for li, L in enumerate(self.layers):
            lora_qkv, lora_o, lora_gu, lora_down = _NO_TERMS if ad is None else ad.layers[li]
            h = _rms_norm(x, L.attn_norm, cfg.rms_eps)
            qkv = L.wqkv(h, lora_qkv)
            if L.bqkv is not None:
                qkv += L.bqkv
            # Q and K are adjacent columns of the fused projection: normalize and rotate their heads in place.
            heads = qkv[:, : nq + nk].reshape(T, nh + nkv, hd)
            if L.q_norm is not None:
                heads[:, :nh] = _rms_norm(heads[:, :nh], L.q_norm, cfg.rms_eps)
                heads[:, nh:] = _rms_norm(heads[:, nh:], L.k_norm, cfg.rms_eps)
            self._rope(heads, rots[L.plan.rope])
            q = qkv[:, :nq]
            at = _slots(cache.caps[li], p0, S)
            cache.store(li, at, qkv[:, nq : nq + nk].reshape(T, nkv, hd).transpose(1, 0, 2), qkv[:, nq + nk :].reshape(T, nkv, hd).transpose(1, 0, 2))
            if T <= EXACT_ROWS:
                o = np.empty((T, nq), np.float32)
                for t in range(T):
                    o[t] = self._attend_one(q[t], cache, li, p0 + t + 1, scale, L.plan.window)
            else:
                o = self._attend_batch(q, cache, li, p0, T, scale, L.plan.window)
            y = L.wo(o, lora_o)
            x += y if L.post_attn_norm is None else _rms_norm(y, L.post_attn_norm, cfg.rms_eps)
            h = _rms_norm(x, L.ffn_norm, cfg.rms_eps)
            y = L.w_down(_gated(L.w_gate_up(h, lora_gu), cfg.n_ff, cfg.arch.activation), lora_down)
            x += y if L.post_ffn_norm is None else _rms_norm(y, L.post_ffn_norm, cfg.rms_eps)

        head = () if ad is None else ad.head
        if logits == "last":
            return self.lm_head(_rms_norm(x[-1:], self.out_norm, cfg.rms_eps), head)[0]
        start = 0 if logits == "all" else int(logits)
        if start >= T:
            return np.empty((0, self.lm_head.n), np.float32)
        return self.lm_head(_rms_norm(x[start:], self.out_norm, cfg.rms_eps), head)


def rope_factors(gguf: GGUFFile, cfg: ModelConfig) -> np.ndarray | None:
    """Llama 3.x's per-dimension frequency divisors (``rope_freqs.weight``), or None."""
    if not cfg.rope_freqs:
        return None
    f = vector(gguf.tensor("rope_freqs.weight"))
    if f.shape != (cfg.rope_dim // 2,):
        raise ModelFormatError(gguf.path, f"rope_freqs.weight has {f.size} values, RoPE needs {cfg.rope_dim // 2}")
    return f
