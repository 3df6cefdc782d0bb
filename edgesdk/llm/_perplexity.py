"""Perplexity over a text, computed the way llama.cpp's ``llama-perplexity`` does.

The text is tokenized once (no BOS unless the model's metadata asks for it, in which case the first
token of every chunk is replaced by BOS, as llama.cpp does) and cut into consecutive, non-overlapping
chunks of ``n_ctx`` tokens (the remainder is dropped). Each chunk is evaluated from an empty cache;
only the second half is scored, so every scored token has at least ``n_ctx / 2`` tokens of context:
positions ``first = n_ctx // 2`` .. ``n_ctx - 2`` predict tokens ``first + 1`` .. ``n_ctx - 1``.
Perplexity is ``exp(mean negative log-likelihood)`` over all scored tokens of all chunks.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import attrs
import numpy as np

from .. import _progress
from .._errors import GenerationError

__all__ = ["PerplexityResult", "perplexity_from_logits", "chunk_nll"]


@attrs.frozen
class PerplexityResult:
    """``ppl`` and its standard error estimate (delta method), with what was scored."""

    ppl: float
    nll: float
    stderr: float
    n_ctx: int
    chunks: int
    scored_tokens: int
    text_tokens: int
    per_chunk: tuple[float, ...] = attrs.field(default=(), repr=False)


def chunk_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of ``targets`` (T,) under ``logits`` (T, vocab), in float64."""
    z = logits.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    return lse - z[np.arange(z.shape[0]), targets]


def perplexity_from_logits(
    tokens: Sequence[int],
    n_ctx: int,
    score_chunk: Callable[[list[int], int], np.ndarray],
    bos_id: int | None = None,
    max_chunks: int | None = None,
) -> PerplexityResult:
    """The llama.cpp perplexity of ``tokens``; ``score_chunk(chunk, first)`` returns logits of positions first..n_ctx-2."""
    if n_ctx < 4:
        raise GenerationError(f"n_ctx must be >= 4 for perplexity, got {n_ctx}")
    n_chunks = len(tokens) // n_ctx
    if max_chunks is not None:
        n_chunks = min(n_chunks, max_chunks)
    if n_chunks < 1:
        raise GenerationError(f"the text has {len(tokens)} tokens; perplexity needs at least n_ctx={n_ctx}")
    first = n_ctx // 2
    nlls = []
    per_chunk = []
    with _progress.bar(n_chunks, "perplexity", unit="chunk") as bar:
        for c in range(n_chunks):
            chunk = [int(t) for t in tokens[c * n_ctx : (c + 1) * n_ctx]]
            if bos_id is not None:
                chunk[0] = int(bos_id)
            logits = score_chunk(chunk, first)
            nll = chunk_nll(logits[: n_ctx - 1 - first], np.asarray(chunk[first + 1 :], np.int64))
            nlls.append(nll)
            per_chunk.append(float(math.exp(nll.mean())))
            # The running value, as llama-perplexity prints it: a bad model shows within a few chunks.
            running = sum(float(x.sum()) for x in nlls) / sum(x.size for x in nlls)
            bar.set_postfix(ppl=f"{math.exp(running):.3f}", refresh=False)
            bar.update(1)
    all_nll = np.concatenate(nlls)
    mean = float(all_nll.mean())
    # Standard error of exp(mean) by the delta method, as llama.cpp reports it.
    se = float(all_nll.std(ddof=1) / math.sqrt(all_nll.size)) if all_nll.size > 1 else 0.0
    ppl = math.exp(mean)
    return PerplexityResult(
        ppl=ppl,
        nll=mean,
        stderr=ppl * se,
        n_ctx=n_ctx,
        chunks=n_chunks,
        scored_tokens=int(all_nll.size),
        text_tokens=len(tokens),
        per_chunk=tuple(per_chunk),
    )
