"""Tokenizer built from GGUF metadata: byte-level BPE (``tokenizer.ggml.model == "gpt2"``).

Encoding goes through the ``tokenizers`` library; decoding maps each id to its bytes ourselves, so
streaming can emit text as soon as a UTF-8 character is complete and never splits one.
"""

from __future__ import annotations

import codecs
import hashlib
from typing import Iterable

import numpy as np

from .._errors import GenerationError, UnsupportedModelError
from ._gguf import GGUFFile

__all__ = ["Tokenizer", "StreamDecoder"]

# GGUF token types (llama.cpp's llama_token_type).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

# Pre-tokenizer regexes by ``tokenizer.ggml.pre``, as llama.cpp's llama-vocab.cpp defines them.
_GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_RE = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_RE = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# name -> (split digits one by one first, regex or None for GPT-2's built-in one)
_PRE = {
    "default": (False, None),
    "gpt-2": (False, None),
    "gpt2": (False, None),
    "smollm": (True, None),
    "starcoder": (True, None),
    "refact": (True, None),
    "llama3": (False, _LLAMA3_RE),
    "llama-bpe": (False, _LLAMA3_RE),
    "qwen2": (False, _QWEN2_RE),
}


def _byte_decoder() -> dict[str, int]:
    # GPT-2's reversible byte <-> printable unicode table.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class Tokenizer:
    """Text <-> token ids for one model. ``encode`` parses special tokens (``<|im_start|>``) in text."""

    def __init__(self, gguf: GGUFFile):
        from tokenizers import AddedToken, Regex, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers.models import BPE

        path = gguf.path
        kind = gguf.require("tokenizer.ggml.model")
        if kind != "gpt2":
            raise UnsupportedModelError(path, f"tokenizer model {kind!r} is not supported (only byte-level BPE 'gpt2')")
        pre = gguf.get("tokenizer.ggml.pre", "default")
        if pre not in _PRE:
            raise UnsupportedModelError(path, f"pre-tokenizer {pre!r} is not supported; known: {', '.join(sorted(_PRE))}")
        self.tokens: list[str] = list(gguf.require("tokenizer.ggml.tokens"))
        types = gguf.array_field("tokenizer.ggml.token_type")
        self.token_types = types if types is not None else np.full(len(self.tokens), _NORMAL)
        merges = [tuple(m.split(" ", 1)) for m in gguf.get("tokenizer.ggml.merges", [])]

        vocab = {t: i for i, t in enumerate(self.tokens)}
        tok = HFTokenizer(BPE(vocab=vocab, merges=merges, fuse_unk=False))
        split_digits, regex = _PRE[pre]
        steps = []
        if split_digits:
            steps.append(pre_tokenizers.Digits(individual_digits=True))
        if regex is None:
            steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
        else:
            steps.append(pre_tokenizers.Split(Regex(regex), behavior="isolated"))
            steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
        tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
        self.special_ids = frozenset(int(i) for i in np.nonzero((self.token_types == _CONTROL) | (self.token_types == _USER_DEFINED))[0])
        tok.add_special_tokens([AddedToken(self.tokens[i], special=True, normalized=False) for i in sorted(self.special_ids)])
        self._tok = tok

        bd = _byte_decoder()
        self._bytes: list[bytes] = []
        for i, t in enumerate(self.tokens):
            if i in self.special_ids:
                self._bytes.append(t.encode())
            else:
                try:
                    self._bytes.append(bytes(bd[c] for c in t))
                except KeyError:  # not a byte-level token (should not happen in a gpt2 vocab)
                    self._bytes.append(t.encode())

        self.bos_id = gguf.get("tokenizer.ggml.bos_token_id")
        self.eos_id = gguf.get("tokenizer.ggml.eos_token_id")
        self.add_bos = bool(gguf.get("tokenizer.ggml.add_bos_token", False))
        eot = gguf.get("tokenizer.ggml.eot_token_id")
        stop = {i for i in (self.eos_id, eot) if i is not None}
        # Chat models end a turn with a control token that the metadata does not always flag as EOS.
        for name in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>"):
            if name in vocab and vocab[name] in self.special_ids:
                stop.add(vocab[name])
        self.stop_ids = frozenset(stop)
        self.chat_template: str | None = gguf.get("tokenizer.chat_template")
        # The vocabulary now lives here and in the tokenizers object; the parsed metadata copy is dead weight.
        for key in ("tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.tokens"):
            gguf.meta.pop(key, None)
        self.fingerprint = hashlib.sha256("\x00".join(self.tokens).encode()).hexdigest()

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        if not isinstance(text, str):
            raise GenerationError(f"prompt must be str, got {type(text).__name__}")
        ids = self._tok.encode(text, add_special_tokens=False).ids
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids = [int(self.bos_id)] + ids
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        return b"".join(self._bytes[i] for i in ids if not (skip_special and i in self.special_ids)).decode("utf-8", "replace")

    def stream_decoder(self, skip_special: bool = True) -> "StreamDecoder":
        return StreamDecoder(self, skip_special)


class StreamDecoder:
    """Turns token ids into text pieces; bytes of an incomplete UTF-8 character wait for the next token."""

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = True):
        self._tok = tokenizer
        self._skip = skip_special
        self._dec = codecs.getincrementaldecoder("utf-8")("replace")

    def push(self, token_id: int) -> str:
        if self._skip and token_id in self._tok.special_ids:
            return ""
        return self._dec.decode(self._tok.token_bytes(token_id))

    def flush(self) -> str:
        return self._dec.decode(b"", final=True)
