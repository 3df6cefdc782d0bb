"""The decoder forward pass on an OpenCL device: weights, activations and KV cache stay in device buffers.

Per forward call only the token embeddings go up (T x n_embd floats, looked up on the host from the
memory-mapped table) and only the requested logits come back. Same interface as
:class:`edgesdk.llm._model.Transformer` (``cfg``, ``impl``, ``new_cache``, ``forward``), so the
generation engine (:class:`edgesdk.llm.LLM`) runs it unchanged.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from edgesdk._errors import ContextLengthError, UnsupportedModelError
from edgesdk.llm._model import LayerNorms, TokenCache, _expected_shapes, layer_tensor, rope_factors, rope_rotation, softcap
from edgesdk.llm._weights import Embedding, vector
from edgesdk.llm.arch import FEATURES

from ._runtime import ClWeight

__all__ = ["ClKVCache", "ClTransformer", "IMPLEMENTS", "rope_tables"]

#: The forward-pass primitives (edgesdk.llm.arch.FEATURES) this pass implements: all of them. It is
#: FEATURES itself so that placement keeps sending every model here; a primitive added there must be
#: implemented in this pass too (or listed out of an explicit tuple here, so placement refuses by name).
IMPLEMENTS = FEATURES

log = logging.getLogger("edgesdk.backends.opencl")


def _parts(tensors):
    """(raw rows, type, n, k) of GGUF tensors, as :class:`ClWeight` takes them."""
    out = []
    for t in tensors:
        k, n = (int(s) for s in t.shape[:2])
        out.append((t.data, t.tensor_type.name, n, k))
    return out


class ClKVCache(TokenCache):
    """Per-layer K and V device buffers ([kv head][n_ctx][head_dim] floats), allocated at creation."""

    def __init__(self, model: "ClTransformer", n_ctx: int):
        super().__init__(n_ctx)
        cfg, rt = model.cfg, model.rt
        per_layer = cfg.n_head_kv * n_ctx * cfg.head_dim * 4
        self.k = [rt.empty(per_layer) for _ in range(cfg.n_layer)]
        self.v = [rt.empty(per_layer) for _ in range(cfg.n_layer)]
        self.nbytes = 2 * cfg.n_layer * per_layer
        model.rope_tables(n_ctx)

    def release(self) -> None:
        for b in self.k + self.v:
            b.release()
        self.k, self.v = [], []


def rope_tables(rt, cfg, n: int, factors=None) -> list:
    """(cos, sin) device buffers of positions 0..n-1 per entry of ``cfg.ropes`` (base, linear scale),
    ``factors`` (rope_freqs) dividing the frequencies: the very values the CPU reference's
    :func:`rope_rotation` computes (float64 on the host), so the device needs no fp64."""
    out = []
    for r in range(len(cfg.ropes)):
        rot = rope_rotation(cfg, np.arange(n), r, factors)
        out.append((rt.upload(np.ascontiguousarray(rot.real)), rt.upload(np.ascontiguousarray(rot.imag))))
    return out


class _Layer(LayerNorms):
    """One layer's device buffers: the norm/bias vectors the architecture has (None where it has none,
    which is what switches each optional launch off) and its four projections."""

    def __init__(self, rt, g, i: int, cfg, shapes: dict):
        super().__init__(g, i, cfg, shapes, load=rt.upload)

        def lin(names):
            ts = [layer_tensor(g, i, n, "weight", shapes) for n in names]
            w = ClWeight(rt, _parts(ts), [x.name for x in ts])
            for x in ts:
                g.release(x)  # uploaded: the file pages need not stay resident
            return w

        self.plan = cfg.layers[i]
        self.wqkv = lin(cfg.arch.qkv)
        self.wo = lin(("attn_output",))
        self.w_gate_up = lin(cfg.arch.gate_up)
        self.w_down = lin(("ffn_down",))

    @property
    def nbytes(self) -> int:
        return sum(w.nbytes for w in (self.wqkv, self.wo, self.w_gate_up, self.w_down))


class ClTransformer:
    """Decoder-only transformer on one OpenCL device, every choice read from ``gguf.config()`` like the
    CPU :class:`~edgesdk.llm._model.Transformer` (see :mod:`._runtime` for the kernels)."""

    impl = "opencl"

    def __init__(self, gguf, rt, prefill_chunk: int = 128, max_ctx: int | None = None):
        self.gguf = gguf
        self.rt = rt
        self.cfg = cfg = gguf.config()
        missing = sorted(cfg.features - set(IMPLEMENTS))
        if missing:
            raise UnsupportedModelError(gguf.path, f"the OpenCL pass does not implement {', '.join(missing)}, which {cfg.arch.name} needs")
        self.chunk = int(prefill_chunk)
        self.max_ctx = max_ctx
        head = gguf.tensor("token_embd.weight" if cfg.tied_embeddings else "output.weight")
        self.lm_head = ClWeight(rt, _parts([head]), [head.name])
        self.embed = Embedding(gguf.tensor("token_embd.weight"), cfg.embed_scale)
        shapes = _expected_shapes(cfg)
        self.layers = [_Layer(rt, gguf, i, cfg, shapes) for i in range(cfg.n_layer)]
        self.out_norm = rt.upload(vector(gguf.tensor("output_norm.weight")))
        self.weight_bytes = self.lm_head.nbytes + sum(L.nbytes for L in self.layers)
        self._factors = rope_factors(gguf, cfg)
        self._rope: tuple[int, list] = (0, [])  # (positions covered, (cos, sin) buffers per cfg.ropes entry)
        self._scratch: dict[str, object] = {}
        self._rows = 0
        # One set of activation buffers and one in-order queue: concurrent run() calls take turns.
        self._lock = threading.Lock()
        #: Tokens processed by forward() since load (same meaning as the CPU Transformer's).
        self.tokens_processed = 0
        rt.finish()

    def new_cache(self, n_ctx: int | None = None) -> ClKVCache:
        cap = self.cfg.n_ctx_train if self.max_ctx is None else min(self.max_ctx, self.cfg.n_ctx_train)
        return ClKVCache(self, min(n_ctx or cap, self.cfg.n_ctx_train))

    def rope_tables(self, n: int) -> list:
        """(cos, sin) buffers covering positions 0..n-1, one pair per RoPE table (see :func:`rope_tables`)."""
        if self._rope[0] < n:
            self._rope = (n, rope_tables(self.rt, self.cfg, n, self._factors))
        return self._rope[1]

    def _buffers(self, rows: int) -> dict:
        """Activation buffers for ``rows`` rows (grown when a longer chunk arrives, reused otherwise)."""
        if rows > self._rows:
            cfg = self.cfg
            nq, nk = cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim
            sizes = {"x": cfg.n_embd, "h": cfg.n_embd, "qkv": nq + 2 * nk, "att": nq, "gu": 2 * cfg.n_ff, "act": cfg.n_ff, "logits": self.lm_head.n}
            for b in self._scratch.values():
                b.release()
            self._scratch = {k: self.rt.empty(rows * n * 4) for k, n in sizes.items()}
            self._rows = rows
        return self._scratch

    def forward(self, ids, cache: ClKVCache, logits="last") -> np.ndarray:
        """Append ``ids`` to ``cache``; logits as :meth:`edgesdk.llm._model.Transformer.forward` returns them."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        T = ids.shape[0]
        p0 = len(cache)
        if p0 + T > cache.n_ctx:
            raise ContextLengthError(f"{p0 + T} tokens exceed the context length {cache.n_ctx}")
        start = T - 1 if logits == "last" else (0 if logits == "all" else int(logits))
        out = np.empty((max(T - start, 0), self.lm_head.n), np.float32)
        x = self.embed(ids)
        with self._lock:
            for s in range(0, T, self.chunk):
                rows = min(self.chunk, T - s)
                first = max(start - s, 0)  # first row of this chunk whose logits are wanted
                self._chunk(x[s : s + rows], cache, p0 + s, out[s + first - start : s + rows - start] if first < rows else None, first)
            self.tokens_processed += T
        softcap(out, self.cfg.logit_softcap)  # host side: a tanh over the few rows read back
        cache.tokens.extend(int(i) for i in ids)
        return out[0] if logits == "last" else out

    def _chunk(self, x_host: np.ndarray, cache: ClKVCache, pos: int, out, first: int) -> None:
        rt, cfg = self.rt, self.cfg
        T = x_host.shape[0]
        b = self._buffers(T)
        x, h, qkv, att, gu, act = b["x"], b["h"], b["qkv"], b["att"], b["gu"], b["act"]
        d, nh, nkv, hd, ff = cfg.n_embd, cfg.n_head, cfg.n_head_kv, cfg.head_dim, cfg.n_ff
        nq, nqkv = nh * hd, (nh + 2 * nkv) * hd
        eps, neox = cfg.rms_eps, cfg.arch.rope == "neox"
        scale = float(np.float32(1.0 / np.sqrt(hd)))
        ropes = self.rope_tables(cache.n_ctx)
        rt.write(x, x_host)
        for li, L in enumerate(self.layers):
            rt.rms_norm(x, 0, L.attn_norm, h, T, d, eps)
            L.wqkv(h, d, T, qkv, nqkv)
            if L.bqkv is not None:
                rt.add_bias(qkv, nqkv, L.bqkv, T, nqkv)
            # Q and K heads are adjacent columns: one launch normalizes, one rotates, both of them.
            if L.q_norm is not None:
                rt.head_norm(qkv, nqkv, T, nh, nkv, hd, L.q_norm, L.k_norm, eps)
            cs, sn = ropes[L.plan.rope]
            rt.rope(qkv, nqkv, T, nh + nkv, hd, cfg.rope_dim, neox, cs, sn, pos)
            rt.kv_store(qkv, nqkv, T, nq, nkv, hd, cache.k[li], cache.v[li], cache.n_ctx, pos)
            rt.attention(qkv, nqkv, T, cache.k[li], cache.v[li], att, nq, nh, nkv, hd, cache.n_ctx, pos, scale, L.plan.window)
            # A block's output goes straight into the residual stream (the matmul accumulates) unless the
            # layer has a post norm: then into h (free once the block's input projection has run), from
            # which one launch norms it and adds it to the stream.
            self._residual(L.wo, att, nq, T, x, h, L.post_attn_norm, d, eps)
            rt.rms_norm(x, 0, L.ffn_norm, h, T, d, eps)
            L.w_gate_up(h, d, T, gu, 2 * ff)
            rt.gated(gu, act, T, ff, cfg.arch.activation)
            self._residual(L.w_down, act, ff, T, x, h, L.post_ffn_norm, d, eps)
        if out is not None:
            n = T - first
            rt.rms_norm(x, first, self.out_norm, h, n, d, cfg.rms_eps)
            self.lm_head(h, d, n, b["logits"], self.lm_head.n)
            rt.read(out, b["logits"])
        else:
            rt.finish()

    def _residual(self, w, inp, k: int, T: int, x, tmp, post_norm, d: int, eps: float) -> None:
        if post_norm is None:
            w(inp, k, T, x, d, accumulate=True)
        else:
            w(inp, k, T, tmp, d)
            self.rt.rms_norm(tmp, 0, post_norm, x, T, d, eps, accumulate=True)

    def close(self) -> None:
        with self._lock:
            for b in self._scratch.values():
                b.release()
            self._scratch, self._rows = {}, 0
