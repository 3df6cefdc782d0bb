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
from edgesdk.llm._model import TokenCache, _expected_shapes, layer_tensor, rope_rotation
from edgesdk.llm._weights import Embedding, vector

from ._runtime import ClWeight

__all__ = ["ClKVCache", "ClTransformer", "IMPLEMENTS"]

#: The forward-pass primitives (edgesdk.llm.arch.FEATURES) this pass implements; placement refuses
#: models needing others, by name.
IMPLEMENTS = ("attn_bias",)

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


class _Layer:
    def __init__(self, rt, g, i: int, bias: bool, shapes: dict):
        def t(n: str, kind: str = "weight"):
            return layer_tensor(g, i, n, kind, shapes)

        def lin(*names):
            ts = [t(n) for n in names]
            w = ClWeight(rt, _parts(ts), [x.name for x in ts])
            for x in ts:
                g.release(x)  # uploaded: the file pages need not stay resident
            return w

        self.attn_norm = rt.upload(vector(t("attn_norm")))
        self.ffn_norm = rt.upload(vector(t("ffn_norm")))
        self.bqkv = rt.upload(np.concatenate([vector(t(f"attn_{n}", "bias")) for n in "qkv"])) if bias else None
        self.wqkv = lin("attn_q", "attn_k", "attn_v")
        self.wo = lin("attn_output")
        self.w_gate_up = lin("ffn_gate", "ffn_up")
        self.w_down = lin("ffn_down")

    @property
    def nbytes(self) -> int:
        return sum(w.nbytes for w in (self.wqkv, self.wo, self.w_gate_up, self.w_down))


class ClTransformer:
    """Llama-family decoder on one OpenCL device (see :mod:`._runtime` for the kernels)."""

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
        self.embed = Embedding(gguf.tensor("token_embd.weight"))
        shapes = _expected_shapes(cfg)
        self.layers = [_Layer(rt, gguf, i, cfg.arch.attn_bias, shapes) for i in range(cfg.n_layer)]
        self.out_norm = rt.upload(vector(gguf.tensor("output_norm.weight")))
        self.weight_bytes = self.lm_head.nbytes + sum(L.nbytes for L in self.layers)
        self._rope = (0, None, None)  # (positions covered, cos buffer, sin buffer)
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

    def rope_tables(self, n: int):
        """cos/sin buffers for positions 0..n-1, computed on the host in float64 like the CPU backend."""
        if self._rope[0] < n:
            rot = rope_rotation(self.cfg, np.arange(n))
            self._rope = (n, self.rt.upload(np.ascontiguousarray(rot.real)), self.rt.upload(np.ascontiguousarray(rot.imag)))
        return self._rope[1], self._rope[2]

    def _buffers(self, rows: int) -> dict:
        """Activation buffers for ``rows`` rows (grown when a longer chunk arrives, reused otherwise)."""
        if rows > self._rows:
            cfg = self.cfg
            nq, nk = cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim
            sizes = {"x": cfg.n_embd, "h": cfg.n_embd, "qkv": nq + 2 * nk, "att": nq, "gu": 2 * cfg.n_ff,
                     "act": cfg.n_ff, "logits": self.lm_head.n}
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
        cache.tokens.extend(int(i) for i in ids)
        return out[0] if logits == "last" else out

    def _chunk(self, x_host: np.ndarray, cache: ClKVCache, pos: int, out, first: int) -> None:
        rt, cfg = self.rt, self.cfg
        T = x_host.shape[0]
        b = self._buffers(T)
        x, h, qkv, att, gu, act = b["x"], b["h"], b["qkv"], b["att"], b["gu"], b["act"]
        d, nh, nkv, hd, ff = cfg.n_embd, cfg.n_head, cfg.n_head_kv, cfg.head_dim, cfg.n_ff
        nq, nqkv = nh * hd, (nh + 2 * nkv) * hd
        scale = float(np.float32(1.0 / np.sqrt(hd)))
        cs, sn = self.rope_tables(cache.n_ctx)
        rt.write(x, x_host)
        for li, L in enumerate(self.layers):
            rt.rms_norm(x, 0, L.attn_norm, h, T, d, cfg.rms_eps)
            L.wqkv(h, d, T, qkv, nqkv)
            if L.bqkv is not None:
                rt.add_bias(qkv, nqkv, L.bqkv, T, nqkv)
            # Q and K heads are adjacent columns: one launch rotates both.
            rt.rope(qkv, nqkv, T, nh + nkv, hd, cfg.rope_dim, cfg.arch.rope == "neox", cs, sn, pos)
            rt.kv_store(qkv, nqkv, T, nq, nkv, hd, cache.k[li], cache.v[li], cache.n_ctx, pos)
            rt.attention(qkv, nqkv, T, cache.k[li], cache.v[li], att, nq, nh, nkv, hd, cache.n_ctx, pos, scale)
            L.wo(att, nq, T, x, d, accumulate=True)
            rt.rms_norm(x, 0, L.ffn_norm, h, T, d, cfg.rms_eps)
            L.w_gate_up(h, d, T, gu, 2 * ff)
            rt.swiglu(gu, act, T, ff)
            L.w_down(act, ff, T, x, d, accumulate=True)
        if out is not None:
            n = T - first
            rt.rms_norm(x, first, self.out_norm, h, n, d, cfg.rms_eps)
            self.lm_head(h, d, n, b["logits"], self.lm_head.n)
            rt.read(out, b["logits"])
        else:
            rt.finish()

    def close(self) -> None:
        with self._lock:
            for b in self._scratch.values():
                b.release()
            self._scratch, self._rows = {}, 0
