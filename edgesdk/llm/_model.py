"""The decoder-only transformer forward pass over a preallocated KV cache.

One ``forward(ids, cache)`` serves prefill (T tokens, GEMM), decode (T = 1, GEMV) and speculative
verification (a few tokens). Every architectural choice comes from :class:`ModelConfig`.
"""

from __future__ import annotations

import logging
import mmap
import os

import numpy as np

from .._errors import ContextLengthError, ModelFormatError
from ._gguf import GGUFFile, ModelConfig
from ._weights import Embedding, Linear, kernel_impl, vector

__all__ = ["KVCache", "TokenCache", "Transformer"]

log = logging.getLogger(__name__)

# numpy path: up to this many tokens per forward, attention runs row by row with exactly the shapes
# of a one-token decode step. With int8 activations, a last-bit difference (another BLAS blocking,
# extra masked zeros in a softmax sum) can flip a rounding and, 30 layers later, a near-tie argmax;
# row-by-row keeps speculative verification bit-identical to plain decoding. (The fused C loop is
# row-by-row for every chunk size.)
EXACT_ROWS = 64


def _lazy_zeros(shape) -> np.ndarray:
    """A float32 zero array whose memory is committed 4 KiB at a time, as it is written.

    Each (layer, head) row of the cache is touched at its first positions only; with transparent
    huge pages every touch would commit 2 MiB, i.e. the whole cache at the first token.
    """
    nbytes = int(np.prod(shape)) * 4
    try:
        mm = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_NOHUGEPAGE"):
            mm.madvise(mmap.MADV_NOHUGEPAGE)
    except (OSError, ValueError, AttributeError):  # not Linux/BSD: calloc pages are lazy enough
        return np.zeros(shape, np.float32)
    return np.frombuffer(mm, np.float32).reshape(shape)


class TokenCache:
    """What the generation engine needs of a KV cache, wherever its keys/values live.

    ``tokens`` are the ids whose keys/values are stored: a new prompt sharing a prefix with them
    reuses that prefix instead of recomputing it.
    """

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
    """Keys/values for every layer in host memory, allocated once for the whole context.

    ``np.zeros`` maps untouched pages lazily, so a long context costs memory only as it fills.
    """

    def __init__(self, cfg: ModelConfig, n_ctx: int):
        super().__init__(n_ctx)
        shape = (cfg.n_layer, cfg.n_head_kv, n_ctx, cfg.head_dim)
        self.k = _lazy_zeros(shape)
        self.v = _lazy_zeros(shape)
        self.native = None  # (fused forward, its per-layer C structs) bound to this cache

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes


def _rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    ms = np.einsum("ij,ij->i", x, x)[:, None] / np.float32(x.shape[-1])
    return x * (w / np.sqrt(ms + np.float32(eps)))


def _inv_freq(cfg: ModelConfig) -> np.ndarray:
    half = cfg.rope_dim // 2
    return (1.0 / cfg.rope_base ** (np.arange(half, dtype=np.float64) * 2.0 / cfg.rope_dim)).astype(np.float64)


def rope_rotation(cfg: ModelConfig, pos: np.ndarray) -> np.ndarray:
    """RoPE angles of positions ``pos`` as unit complex64 numbers (T, rope_dim / 2), computed in float64."""
    ang = (np.asarray(pos)[:, None].astype(np.float64) / cfg.rope_scale) * _inv_freq(cfg)[None, :]
    return np.exp(1j * ang).astype(np.complex64)


def _swiglu(gu: np.ndarray, n_ff: int) -> np.ndarray:
    """SiLU(gate) * up of a fused gate|up projection (T, 2 * n_ff)."""
    gate, up = gu[:, :n_ff], gu[:, n_ff:]
    act = np.exp(-gate)
    act += 1.0
    np.divide(gate, act, out=act)
    act *= up
    return act


def _expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """GGUF dims (fastest first) of one layer's tensors, from the config: a mismatch is a bad file."""
    d, q, kv, ff = cfg.n_embd, cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim, cfg.n_ff
    return {
        "attn_norm.weight": (d,), "ffn_norm.weight": (d,),
        "attn_q.weight": (d, q), "attn_k.weight": (d, kv), "attn_v.weight": (d, kv), "attn_output.weight": (q, d),
        "ffn_gate.weight": (d, ff), "ffn_up.weight": (d, ff), "ffn_down.weight": (ff, d),
        "attn_q.bias": (q,), "attn_k.bias": (kv,), "attn_v.bias": (kv,),
    }


def layer_tensor(g: GGUFFile, i: int, n: str, kind: str, shapes: dict):
    """Tensor ``blk.<i>.<n>.<kind>``, its dims checked against :func:`_expected_shapes` (a mismatch is a bad file)."""
    tensor = g.tensor(f"blk.{i}.{n}.{kind}")
    dims = tuple(int(x) for x in tensor.shape)
    if dims != shapes[f"{n}.{kind}"]:
        raise ModelFormatError(g.path, f"tensor {tensor.name!r} has dims {dims}, the metadata implies {shapes[f'{n}.{kind}']}")
    return tensor


class _Layer:
    def __init__(self, g: GGUFFile, i: int, impl: str, threads, act: str, bias: bool, shapes: dict):
        def t(n: str, kind: str = "weight"):
            return layer_tensor(g, i, n, kind, shapes)

        # Q|K|V biases, concatenated like the fused projection's output columns.
        self.bqkv = np.concatenate([vector(t(f"attn_{n}", "bias")) for n in "qkv"]) if bias else None
        self.attn_norm = vector(t("attn_norm"))
        self.ffn_norm = vector(t("ffn_norm"))
        self.wqkv = Linear([t("attn_q"), t("attn_k"), t("attn_v")], impl, threads, g.release, act)
        self.wo = Linear([t("attn_output")], impl, threads, g.release, act)
        self.w_gate_up = Linear([t("ffn_gate"), t("ffn_up")], impl, threads, g.release, act)
        self.w_down = Linear([t("ffn_down")], impl, threads, g.release, act)


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
        m.rope_neox = int(cfg.arch.rope_mode == "neox")
        m.rms_eps, m.rope_scale = cfg.rms_eps, cfg.rope_scale
        m.inv_freq = floats(np.ascontiguousarray(model._inv_freq, np.float64), "double[]")
        m.lm_head = addr(model.lm_head)
        m.out_norm = floats(model.out_norm)
        m.matmul = ffi.cast("llm_matmul_fn", int(kffi.cast("uintptr_t", kffi.addressof(kernels._lib, "ek_matmul"))))
        m.nthreads = int(model.threads or 0)
        m.nthreads_decode = _decode_threads(model)
        m.act_int8 = int(model.activations == "int8")
        self.m = m
        self.weights = [
            (addr(L.wqkv), addr(L.wo), addr(L.w_gate_up), addr(L.w_down), floats(L.attn_norm), floats(L.ffn_norm),
             ffi.NULL if L.bqkv is None else floats(L.bqkv))
            for L in model.layers
        ]
        self.vocab = model.lm_head.n
        self.max_rows = int(self.lib.LLM_MAX_ROWS)

    def _layers(self, cache: KVCache):
        if cache.native is None or cache.native[0] is not self:
            ffi = self.ffi
            layers = ffi.new("llm_layer[]", len(self.weights))
            kbase = ffi.from_buffer("float[]", cache.k, require_writable=True)
            vbase = ffi.from_buffer("float[]", cache.v, require_writable=True)
            per_layer = cache.k[0].size
            for i, (wqkv, wo, wgu, wdown, an, fn, bqkv) in enumerate(self.weights):
                L = layers[i]
                L.wqkv, L.wo, L.wgu, L.wdown, L.attn_norm, L.ffn_norm, L.bqkv = wqkv, wo, wgu, wdown, an, fn, bqkv
                L.k, L.v = kbase + i * per_layer, vbase + i * per_layer
            cache.native = (self, layers, kbase, vbase)
        return cache.native[1]

    def forward(self, x: np.ndarray, T: int, cache: KVCache, start: int) -> np.ndarray:
        from .._errors import KernelError

        # A per-call copy of the model struct: Runner.run may score on several threads, each with its own cache.
        m = self.ffi.new("llm_model *", self.m[0])
        m.layers = self._layers(cache)
        m.cpu_allowed = self._kernels._path_needs()  # the loop's SIMD code follows the kernels' path
        m.n_ctx = cache.n_ctx
        out = np.empty((max(T - start, 0), self.vocab), np.float32)
        optr = self.ffi.from_buffer("float[]", out) if out.size else self.ffi.NULL
        rc = self.lib.llm_forward(m, self.ffi.from_buffer("float[]", x), T, len(cache), optr, start)
        if rc:
            raise KernelError(f"fused LLM forward failed (code {rc}: {'non-finite activations' if rc == -2 else 'bad arguments or memory'})")
        return out


# Per-layer packed weights below which steps of up to 16 tokens (decode, speculative verification)
# run their layer matmuls on one thread: each matmul wakes the kernel pool (121 times per token for
# a 30-layer model), and on small layers that costs more than a second thread saves. Measured on the 2-vCPU VM with SmolLM2-135M (2.2 MB/layer):
# 1 thread 250 tok/s vs 2 threads 237 when quiet, ~250 vs ~135 with another process on the cores.
SMALL_LAYER_BYTES = 4 << 20


def _decode_threads(model: "Transformer") -> int:
    env = os.environ.get("EDGESDK_LLM_DECODE_THREADS", "").strip()
    if env:
        try:
            return min(max(0, int(env)), 256)
        except ValueError:  # a typo in the environment must not stop a model from loading
            log.warning("EDGESDK_LLM_DECODE_THREADS=%r is not an integer; ignored", env)
    L = model.layers[0]
    per_layer = sum(lin.packed_bytes for lin in (L.wqkv, L.wo, L.w_gate_up, L.w_down))
    return 1 if per_layer < SMALL_LAYER_BYTES else 0


def _fused_for(model: "Transformer") -> _Fused | None:
    if model.impl != "kernels" or os.environ.get("EDGESDK_LLM_FUSED", "1") == "0":
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
    """Llama-family decoder over packed weights.

    ``impl`` is "numpy" or "kernels" (see _weights). ``activations`` ("int8" or "f32") is how the
    kernels see activations: int8 per 32-block is llama.cpp's choice and the fast one; f32 is exact
    and gives the numpy reference's greedy tokens.
    """

    def __init__(self, gguf: GGUFFile, impl: str | None = None, threads: int | None = None, activations: str = "int8"):
        self.gguf = gguf
        self.cfg = cfg = gguf.config()
        self.impl = impl or kernel_impl()
        self.threads = threads
        self.activations = activations
        # The LM head is the largest tensor: repacking it first keeps its transient copy off the peak RSS.
        head = gguf.tensor("token_embd.weight" if cfg.tied_embeddings else "output.weight")
        self.lm_head = Linear([head], self.impl, threads, gguf.release, activations)
        self.embed = Embedding(gguf.tensor("token_embd.weight"))
        shapes = _expected_shapes(cfg)
        self.layers = [_Layer(gguf, i, self.impl, threads, activations, cfg.arch.attn_bias, shapes) for i in range(cfg.n_layer)]
        self.out_norm = vector(gguf.tensor("output_norm.weight"))
        self._inv_freq = _inv_freq(cfg)
        #: Tokens processed by forward() since load: lets tests check that cached prefixes are not recomputed.
        self.tokens_processed = 0
        self.fused = _fused_for(self)

    def new_cache(self, n_ctx: int | None = None) -> KVCache:
        return KVCache(self.cfg, min(n_ctx or self.cfg.n_ctx_train, self.cfg.n_ctx_train))

    def _rotation(self, pos: np.ndarray) -> np.ndarray:
        """RoPE as unit complex numbers (T, 1, rope_dim / 2) for positions ``pos``."""
        return rope_rotation(self.cfg, pos)[:, None, :]

    def _rope(self, x: np.ndarray, rot: np.ndarray) -> None:
        """Rotate heads of ``x`` (T, H, D) in place: "norm" pairs dims (2i, 2i+1), "neox" pairs (i, i + D/2)."""
        rd = self.cfg.rope_dim
        if self.cfg.arch.rope_mode == "norm":
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

    def _attend_one(self, q: np.ndarray, cache: KVCache, li: int, S: int, scale) -> np.ndarray:
        """Attention of one query row over keys 0..S-1; GQA: query head j reads kv head j // g."""
        cfg = self.cfg
        g = cfg.n_head // cfg.n_head_kv
        s = np.matmul(q.reshape(cfg.n_head_kv, g, cfg.head_dim), cache.k[li, :, :S].transpose(0, 2, 1))  # (nkv, g, S)
        s *= scale
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=-1, keepdims=True)
        return np.matmul(s, cache.v[li, :, :S]).reshape(-1)

    def _attend_batch(self, q: np.ndarray, cache: KVCache, li: int, p0: int, T: int, scale) -> np.ndarray:
        """Causal attention of T query rows at positions p0.. in one batched matmul (prefill)."""
        cfg = self.cfg
        nkv, hd = cfg.n_head_kv, cfg.head_dim
        g = cfg.n_head // nkv
        S = p0 + T
        qg = q.reshape(T, nkv, g, hd).transpose(1, 2, 0, 3).reshape(nkv, g * T, hd)
        s = np.matmul(qg, cache.k[li, :, :S].transpose(0, 2, 1)).reshape(nkv, g, T, S)
        s *= scale
        # Query t (at position p0 + t) sees keys 0..p0 + t.
        s += np.where(np.arange(S)[None, :] > np.arange(p0, S)[:, None], np.float32(-np.inf), np.float32(0.0))
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=-1, keepdims=True)
        o = np.matmul(s.reshape(nkv, g * T, S), cache.v[li, :, :S])  # (nkv, g*T, hd)
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
        pos = np.arange(p0, p0 + T)
        nh, nkv, hd = cfg.n_head, cfg.n_head_kv, cfg.head_dim
        scale = np.float32(1.0 / np.sqrt(hd))
        S = p0 + T
        if self.fused is not None and T <= self.fused.max_rows:
            start = T - 1 if logits == "last" else (0 if logits == "all" else int(logits))
            out = self.fused.forward(self.embed(ids), T, cache, start)
            cache.tokens.extend(int(i) for i in ids)
            self.tokens_processed += T
            return out[0] if logits == "last" else out
        rot = self._rotation(pos)
        nq, nk = nh * hd, nkv * hd
        x = self.embed(ids)
        for li, L in enumerate(self.layers):
            h = _rms_norm(x, L.attn_norm, cfg.rms_eps)
            qkv = L.wqkv(h)
            if L.bqkv is not None:
                qkv += L.bqkv
            # Q and K are adjacent columns of the fused projection: rotate both heads at once.
            self._rope(qkv[:, : nq + nk].reshape(T, nh + nkv, hd), rot)
            q = qkv[:, :nq]
            cache.k[li, :, p0:S] = qkv[:, nq : nq + nk].reshape(T, nkv, hd).transpose(1, 0, 2)
            cache.v[li, :, p0:S] = qkv[:, nq + nk :].reshape(T, nkv, hd).transpose(1, 0, 2)
            if T <= EXACT_ROWS:
                o = np.empty((T, nq), np.float32)
                for t in range(T):
                    o[t] = self._attend_one(q[t], cache, li, p0 + t + 1, scale)
            else:
                o = self._attend_batch(q, cache, li, p0, T, scale)
            x += L.wo(o)
            h = _rms_norm(x, L.ffn_norm, cfg.rms_eps)
            gu = L.w_gate_up(h)
            x += L.w_down(_swiglu(gu, cfg.n_ff))

        cache.tokens.extend(int(i) for i in ids)
        self.tokens_processed += T
        if logits == "last":
            return self.lm_head(_rms_norm(x[-1:], self.out_norm, cfg.rms_eps))[0]
        start = 0 if logits == "all" else int(logits)
        if start >= T:
            return np.empty((0, self.lm_head.n), np.float32)
        return self.lm_head(_rms_norm(x[start:], self.out_norm, cfg.rms_eps))
