"""Word error rate: word-level Levenshtein distance over normalized text."""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

from .._errors import InputError

__all__ = ["word_error_rate", "normalize_words"]

_APOSTROPHES = re.compile(r"['\u2019`]")
_NON_WORD = re.compile(r"[^\w]+")


def normalize_words(text: str) -> list[str]:
    """Lower-case words with punctuation removed: ``"Don't stop, Joe!"`` -> ``["dont", "stop", "joe"]``.

    Apostrophes are dropped rather than split on, so "don't" and "dont" match; every other
    non-alphanumeric character separates words (so "well-known" is two words, as ASR often writes it).
    """
    if not isinstance(text, str):
        raise InputError(f"text must be a str, got {type(text).__name__}")
    text = _APOSTROPHES.sub("", unicodedata.normalize("NFKC", text).casefold())
    return [w for w in _NON_WORD.sub(" ", text).replace("_", " ").split() if w]


def _edits(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))  # deletion, insertion, substitution
        prev = cur
    return prev[-1]


def word_error_rate(reference: str | Sequence[str], hypothesis: str | Sequence[str]) -> float:
    """(substitutions + deletions + insertions) / reference words, after :func:`normalize_words`.

    Given two equal-length sequences of strings, returns the corpus WER: total edits over total
    reference words (not the mean of per-sentence rates, which over-weights short sentences).
    0.0 means identical words; it exceeds 1.0 when the hypothesis inserts more words than the
    reference has. A reference with no words raises :class:`InputError` (the rate is undefined).
    """
    if isinstance(reference, str) != isinstance(hypothesis, str):
        raise InputError("reference and hypothesis must both be str or both be sequences of str")
    if isinstance(reference, str):
        pairs = [(reference, hypothesis)]
    else:
        reference, hypothesis = list(reference), list(hypothesis)
        if len(reference) != len(hypothesis):
            raise InputError(f"{len(reference)} references but {len(hypothesis)} hypotheses")
        pairs = list(zip(reference, hypothesis))
    edits = words = 0
    for r, h in pairs:
        rw, hw = normalize_words(r), normalize_words(h)
        edits += _edits(rw, hw)
        words += len(rw)
    if words == 0:
        raise InputError("the reference has no words: the word error rate is undefined")
    return edits / words
