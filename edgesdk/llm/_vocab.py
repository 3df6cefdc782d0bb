"""A model's token strings, held compactly: text -> id and id -> text.

A 262k-token vocabulary (Gemma 3) as a ``list`` of ``str`` plus a ``dict`` costs ~30 MB: each
``str`` is an object of 50-90 bytes for ~9 bytes of text. Here the text lives in one UTF-8 blob
with offsets, and text -> id is an open-addressing hash table of token ids keyed by Python's own
``hash`` of the text: ~30 bytes a token (Gemma 3's 262k: 7.6 MB). Lookups compare the candidate's bytes, so a hash collision
never returns a wrong id.
"""

from __future__ import annotations

from array import array

import numpy as np

__all__ = ["Vocab"]


class Vocab:
    """``tokens[i]`` is token ``i``'s text; ``get(text)`` its id (None when absent); ``ids`` the
    text -> id mapping (``ids[text]``, ``text in ids``).

    Raises ``ValueError`` naming the first repeated token when ``tokens`` has duplicates.
    """

    def __init__(self, tokens: list[str]):
        n = len(tokens)
        encoded = [t.encode("utf-8", "surrogatepass") for t in tokens]
        lengths = np.fromiter(map(len, encoded), np.int64, n)
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        self._blob = b"".join(encoded)
        del encoded
        hashes = np.fromiter(map(hash, tokens), np.int64, n)
        _check_unique(tokens, hashes)
        size = 1 << max(3, (2 * n - 1).bit_length())  # load factor <= 1/2: short probes
        self._mask = size - 1
        table = _build_table(hashes, size)
        # array.array indexes to Python ints several times faster than numpy scalars
        if offsets[-1] >= 2**31:
            raise ValueError(f"vocabulary text of {offsets[-1]} bytes is too large")
        self._offsets = array("i", offsets.astype(np.int32).tobytes())
        self._hashes = array("q", hashes.tobytes())
        self._table = array("i", table.tobytes())
        self._n = n
        self.ids = _Ids(self)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> str:
        if not 0 <= i < self._n:
            raise IndexError(f"token id {i} is out of range [0, {self._n})")
        return self._blob[self._offsets[i] : self._offsets[i + 1]].decode("utf-8", "surrogatepass")

    def __iter__(self):
        return (self[i] for i in range(self._n))

    def __contains__(self, text: str) -> bool:
        return self.get(text) is not None

    def get(self, text: str, default: int | None = None) -> int | None:
        h = hash(text)
        mask, table, hashes, offsets, blob = self._mask, self._table, self._hashes, self._offsets, self._blob
        i = h & mask
        raw = None
        while (t := table[i]) >= 0:
            if hashes[t] == h:
                if raw is None:
                    raw = text.encode("utf-8", "surrogatepass")
                if blob[offsets[t] : offsets[t + 1]] == raw:
                    return t
            i = (i + 1) & mask
        return default

    def __getstate__(self):
        # hash() of str differs between processes (PYTHONHASHSEED): a pickle carries the tokens only
        return list(self)

    def __setstate__(self, tokens):
        self.__init__(tokens)

    @property
    def nbytes(self) -> int:
        """Bytes held (blob, offsets, hashes, table)."""
        return len(self._blob) + sum(a.itemsize * len(a) for a in (self._offsets, self._hashes, self._table))


class _Ids:
    """Text -> id, read-only, over a Vocab."""

    __slots__ = ("get", "_n")

    def __init__(self, vocab: Vocab):
        self.get, self._n = vocab.get, len(vocab)

    def __getitem__(self, text: str) -> int:
        t = self.get(text)
        if t is None:
            raise KeyError(text)
        return t

    def __contains__(self, text: str) -> bool:
        return self.get(text) is not None

    def __len__(self) -> int:
        return self._n


def _check_unique(tokens: list[str], hashes: np.ndarray) -> None:
    """Equal texts have equal hashes: only tokens sharing a hash need comparing."""
    order = np.argsort(hashes, kind="stable")
    same = np.flatnonzero(hashes[order][1:] == hashes[order][:-1])
    for j in same:
        a, b = int(order[j]), int(order[j + 1])
        if tokens[a] == tokens[b]:
            raise ValueError(f"duplicate token {tokens[b]!r} (ids {min(a, b)} and {max(a, b)})")
        # distinct texts with one hash: kept apart by the byte comparison in get()


def _build_table(hashes: np.ndarray, size: int) -> np.ndarray:
    """Linear probing, vectorized: each round, every token still waiting claims its current slot
    if empty (the lowest id wins a contested one) or moves on to the next."""
    mask = size - 1
    table = np.full(size, -1, np.int32)
    waiting = np.arange(len(hashes), dtype=np.int64)
    slot = hashes & mask
    while waiting.size:
        free = table[slot] < 0
        cand, at = waiting[free], slot[free]
        won_slots, first = np.unique(at, return_index=True)  # cand is ascending: first = lowest id
        table[won_slots] = cand[first]
        placed = np.zeros(waiting.size, bool)
        placed[np.flatnonzero(free)[first]] = True
        waiting, slot = waiting[~placed], (slot[~placed] + 1) & mask
    return table
