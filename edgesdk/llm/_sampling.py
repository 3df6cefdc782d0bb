"""Turning logits into probabilities and tokens: penalties, temperature, top-k, top-p, min-p."""

from __future__ import annotations

import numpy as np

from ._config import GenerationConfig

__all__ = ["apply_repetition_penalty", "probabilities", "sample"]


def apply_repetition_penalty(logits: np.ndarray, history, penalty: float) -> np.ndarray:
    if penalty == 1.0 or not len(history):
        return logits
    logits = logits.copy()
    ids = np.unique(np.asarray(history, np.int64))
    sel = logits[ids]
    logits[ids] = np.where(sel > 0, sel / penalty, sel * penalty)
    return logits


def probabilities(logits: np.ndarray, cfg: GenerationConfig) -> np.ndarray:
    """The filtered sampling distribution (float64, sums to 1) for a temperature > 0 config."""
    z = logits.astype(np.float64) / cfg.temperature
    if cfg.top_k and cfg.top_k < z.shape[0]:
        kth = np.partition(z, -cfg.top_k)[-cfg.top_k]
        z = np.where(z < kth, -np.inf, z)
    z -= z.max()
    p = np.exp(z)
    p /= p.sum()
    if cfg.top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order])
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        cut = int(np.searchsorted(cum, cfg.top_p)) + 1
        keep = np.zeros_like(p, dtype=bool)
        keep[order[:cut]] = True
        p = np.where(keep, p, 0.0)
    if cfg.min_p > 0:
        p = np.where(p >= cfg.min_p * p.max(), p, 0.0)
    return p / p.sum()


def sample(logits: np.ndarray, cfg: GenerationConfig, rng: np.random.Generator) -> int:
    if cfg.greedy:
        return int(np.argmax(logits))
    p = probabilities(logits, cfg)
    return int(rng.choice(p.shape[0], p=p))
