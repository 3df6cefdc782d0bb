"""Tokenizer built from GGUF metadata that reproduces llama.cpp (``llama-vocab.cpp``) token for token.

Two vocabulary kinds, named as llama.cpp names them:

* ``tokenizer.ggml.model == "gpt2"``: byte-level BPE. A pre-tokenizer chosen by ``tokenizer.ggml.pre``
  splits text into words; each word's UTF-8 bytes are spelled in GPT-2's printable byte alphabet and
  merged by rank (``tokenizer.ggml.merges``).
* ``tokenizer.ggml.model == "llama"``: SentencePiece BPE (llama.cpp's "SPM"). Spaces become U+2581,
  adjacent pieces merge by vocabulary score (``tokenizer.ggml.scores``), and a character with no
  piece of its own falls back to ``<0xXX>`` byte tokens.

Before either runs, special tokens (control, user-defined, unknown) are cut out of the text, longest
first, the way llama.cpp's ``tokenizer_st_partition`` does it. Decoding maps each id to its bytes
(llama.cpp's ``token_to_piece``), so streaming can emit text as soon as a UTF-8 character is complete
and never splits one. Everything is plain Python: dict lookups and a heap per merge run.
"""

from __future__ import annotations

import codecs
import hashlib
import heapq
import re
import unicodedata
from array import array
from typing import Iterable

import numpy as np

from .._errors import GenerationError, ModelFormatError, UnsupportedModelError
from ._gguf import GGUFFile
from ._vocab import Vocab

__all__ = ["Tokenizer", "StreamDecoder"]

#: ``tokenizer.ggml.model`` values this module implements.
SUPPORTED_MODELS = {"gpt2": "byte-level BPE", "llama": "SentencePiece (SPM)"}

# GGUF token types (llama.cpp's llama_token_type).
_UNDEFINED_T, _NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 0, 1, 2, 3, 4, 5, 6

# llama.cpp's llama_token_attr bits: the loader turns types into these and then patches some by name.
A_UNKNOWN, A_UNUSED, A_NORMAL, A_CONTROL, A_USER_DEFINED, A_BYTE = 1, 2, 4, 8, 16, 32
A_LSTRIP, A_RSTRIP = 128, 256
_TYPE_ATTR = np.array([0, A_NORMAL, A_UNKNOWN, A_CONTROL, A_USER_DEFINED, A_UNUSED, A_BYTE], np.uint16)
# Rendered as their literal text (when not skipped) and never merged into by the text around them.
_SPECIAL_ATTRS = A_CONTROL | A_USER_DEFINED | A_UNKNOWN
# Dropped by token_to_piece(special=False): what ``skip_special`` skips.
_SKIPPED_ATTRS = A_CONTROL | A_UNKNOWN

# Token texts llama.cpp's loader recognises; its converters do not always flag them, so it does.
_EOT_NAMES = (
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
)
_FIM_NAMES = {
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}
_FIM_KEYS = {
    "fim_pre": ("fim_pre", "prefix"),
    "fim_suf": ("fim_suf", "suffix"),
    "fim_mid": ("fim_mid", "middle"),
    "fim_pad": ("fim_pad",),
    "fim_rep": ("fim_rep",),
    "fim_sep": ("fim_sep",),
}
_EOG_NAMES = (
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
)
# gpt-oss chat markup: llama.cpp always renders these, whatever the file says.
_ALWAYS_RENDERED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")

# --- byte-level BPE pre-tokenizers ---------------------------------------------------------------
#
# llama.cpp matches its pre-tokenizer regexes against a "collapsed" copy of the text in which every
# non-ASCII code point stands for its Unicode class; doing the same lets the stdlib ``re`` module
# (no \p{..} support) run them, and keeps llama.cpp's notion of whitespace (Unicode White_Space;
# ASCII 0x1C-0x1F are not whitespace there, unlike in ``re``'s \s).
_C_OTHER, _C_NUM, _C_LETTER, _C_PUNCT, _C_MARK, _C_SYMBOL, _C_SPACE = "\xd0", "\xd1", "\xd2", "\xd3", "\xd4", "\xd5", "\x0b"
_CATEGORY_CLASS = {"N": _C_NUM, "L": _C_LETTER, "P": _C_PUNCT, "M": _C_MARK, "S": _C_SYMBOL}
_L = "A-Za-z" + _C_LETTER
_N = "0-9" + _C_NUM
_WS = "\t\n\x0b\x0c\r "
_P = r"!-#%-*,-/:-;?-@\[-\]_{}" + _C_PUNCT

_GPT2_RE = rf"'s|'t|'re|'ve|'m|'ll|'d| ?[{_L}]+| ?[{_N}]+| ?[^{_WS}{_L}{_N}]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+"
_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_LLAMA3_RE = (
    rf"{_CONTRACTIONS}|[^\r\n{_L}{_N}]?[{_L}]+|[{_N}]{{1,3}}| ?[^{_WS}{_L}{_N}]+[\r\n]*|[{_WS}]*[\r\n]+"
    rf"|[{_WS}]+(?![^{_WS}])|[{_WS}]+"
)
_QWEN2_RE = (
    rf"{_CONTRACTIONS}|[^\r\n{_L}{_N}]?[{_L}]+|[{_N}]| ?[^{_WS}{_L}{_N}]+[\r\n]*|[{_WS}]*[\r\n]+"
    rf"|[{_WS}]+(?![^{_WS}])|[{_WS}]+"
)
# llama.cpp's stages for each pre-tokenizer: each regex splits every piece left by the previous one,
# keeping the text between matches as pieces of its own.
_DEFAULT_STAGES = (rf"[{_P}$+<=>^~|]+", _GPT2_RE, rf"[{_N}]+", r"[0-9][0-9][0-9]")
_GPT2_STAGES = (_GPT2_RE,)
_DIGITS_STAGES = (rf"[{_N}]", _GPT2_RE)
_LLAMA3_STAGES = (_LLAMA3_RE,)
_QWEN2_STAGES = (_QWEN2_RE,)
# name -> (regex stages, ignore_merges, add_bos default), as llama.cpp's vocab loader sets them.
_PRE = {
    "default": (_DEFAULT_STAGES, False, False),
    "gpt-2": (_GPT2_STAGES, False, False),
    "gpt2": (_GPT2_STAGES, False, False),
    "phi-2": (_GPT2_STAGES, False, False),
    "mpt": (_GPT2_STAGES, False, False),
    "olmo": (_GPT2_STAGES, False, False),
    "smollm": (_DIGITS_STAGES, False, False),
    "starcoder": (_DIGITS_STAGES, False, False),
    "refact": (_DIGITS_STAGES, False, False),
    "command-r": (_DIGITS_STAGES, False, False),
    "llama3": (_LLAMA3_STAGES, True, True),
    "llama-v3": (_LLAMA3_STAGES, True, True),
    "llama-bpe": (_LLAMA3_STAGES, True, True),
    "dbrx": (_LLAMA3_STAGES, False, False),
    "smaug-bpe": (_LLAMA3_STAGES, False, False),
    "qwen2": (_QWEN2_STAGES, False, False),
    "stablelm2": (_QWEN2_STAGES, False, False),
    "deepseek-r1-qwen": (_QWEN2_STAGES, False, False),
}
_COMPILED: dict[str, re.Pattern] = {}

# Non-ASCII code point -> its collapsed class character (shared: classes do not depend on the model).
_COLLAPSE: dict[int, str] = {}


def _collapse(text: str) -> str:
    if text.isascii():
        return text
    table = _COLLAPSE
    for ch in set(text):
        o = ord(ch)
        if o >= 128 and o not in table:
            table[o] = _C_SPACE if ch.isspace() else _CATEGORY_CLASS.get(unicodedata.category(ch)[0], _C_OTHER)
    return text.translate(table)


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


_U2B = _byte_decoder()
# For str.translate on a word's UTF-8 bytes read as latin-1: byte value -> GPT-2 alphabet character.
_B2U = {b: c for c, b in _U2B.items()}
# C's isspace(), which llama.cpp uses to strip around LSTRIP/RSTRIP special tokens.
_C_ISSPACE = frozenset(" \t\n\v\f\r")
_ESCAPED_SPACE = "\u2581"
_MAX_CACHE = 1 << 16


def _merge(text: str, priority) -> list[str]:
    """``text`` cut into symbols by repeatedly joining the adjacent pair with the lowest
    ``priority(left, right)`` (None: never joined), leftmost first on ties; the symbols in order.

    SentencePiece (by piece score) and byte-level BPE (by merge rank) differ only in ``priority``.
    Symbol ``i`` always starts at character ``i``: merging only grows the left symbol, so a heap
    entry (priority, left, size) is still valid exactly when the two symbols still add up to ``size``.
    """
    n = len(text)
    if n == 0:
        return []
    length = [1] * n
    nxt = list(range(1, n + 1))
    nxt[-1] = -1
    prv = list(range(-1, n - 1))
    heap = []
    for i in range(n - 1):
        p = priority(text[i], text[i + 1])
        if p is not None:
            heap.append((p, i, 2))
    heapq.heapify(heap)
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        _, left, size = pop(heap)
        ln = length[left]
        if not ln:
            continue
        right = nxt[left]
        if right < 0 or ln + length[right] != size:
            continue
        length[left] = size
        length[right] = 0
        after = nxt[right]
        nxt[left] = after
        merged = text[left : left + size]
        if after >= 0:
            prv[after] = left
            p = priority(merged, text[after : after + length[after]])
            if p is not None:
                push(heap, (p, left, size + length[after]))
        before = prv[left]
        if before >= 0:
            p = priority(text[before:left], merged)
            if p is not None:
                push(heap, (p, before, length[before] + size))
    out = []
    i = 0
    while i >= 0:
        out.append(text[i : i + length[i]])
        i = nxt[i]
    return out


class Tokenizer:
    """Text <-> token ids for one model, as llama.cpp tokenizes it.

    ``encode`` parses special tokens in the text (``<|im_start|>``, ``<start_of_turn>``) like
    llama.cpp's ``tokenize(text, add_special, parse_special=True)``. ``special_ids`` are the tokens
    ``skip_special`` drops (control and unknown); ``user_defined_ids`` (``<think>``, ``<tool_call>``)
    are always rendered. ``stop_ids`` is llama.cpp's end-of-generation set.
    """

    def __init__(self, gguf: GGUFFile):
        path = gguf.path
        kind = gguf.require("tokenizer.ggml.model")
        if kind not in SUPPORTED_MODELS:
            known = ", ".join(f"{k!r} ({v})" for k, v in SUPPORTED_MODELS.items())
            raise UnsupportedModelError(path, f"tokenizer model {kind!r} is not supported; supported: {known}")
        self.kind = kind
        self._spm = kind == "llama"
        if self._spm:
            stages, self._ignore_merges, add_bos_default = (), False, True
        else:
            pre = gguf.get("tokenizer.ggml.pre", "default")
            if pre not in _PRE:
                raise UnsupportedModelError(path, f"pre-tokenizer {pre!r} is not supported; known: {', '.join(sorted(_PRE))}")
            stages, self._ignore_merges, add_bos_default = _PRE[pre]
        self._stages = [_COMPILED.setdefault(s, re.compile(s)) for s in stages]

        tokens = gguf.require("tokenizer.ggml.tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ModelFormatError(path, "tokenizer.ggml.tokens is not a string array")
        if not all(tokens):  # an empty token would match everywhere; llama.cpp renames it
            tokens = [t or f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
        try:
            self.tokens = Vocab(tokens)
        except ValueError as exc:
            raise ModelFormatError(path, f"{exc} in the vocabulary") from None
        n = len(tokens)
        self._vocab = self.tokens.ids
        self.fingerprint = hashlib.sha256("\x00".join(tokens).encode()).hexdigest()

        types = gguf.array_field("tokenizer.ggml.token_type")
        if types is None:
            types = np.full(n, _NORMAL, np.int64)
        elif len(types) < n:
            raise ModelFormatError(path, f"tokenizer.ggml.token_type has {len(types)} entries for {n} tokens")
        self.token_types = np.asarray(types[:n], np.int32)  # the GGUF's own width
        valid = (self.token_types >= 0) & (self.token_types < len(_TYPE_ATTR))
        self._attr = np.where(valid, _TYPE_ATTR[np.where(valid, self.token_types, 0)], 0).astype(np.uint16)

        scores = gguf.get("tokenizer.ggml.scores")
        if self._spm:
            if scores is None:
                scores = np.zeros(n, np.float32)
            elif len(scores) < n:
                raise ModelFormatError(path, f"tokenizer.ggml.scores has {len(scores)} entries for {n} tokens")
            # array('f') indexes to exact Python floats at C speed, at 4 bytes a token.
            self._scores = array("f", np.asarray(scores[:n], np.float32).tobytes())
            self._ranks: dict[str, int] = {}
        else:
            self._ranks = {}
            for i, m in enumerate(gguf.get("tokenizer.ggml.merges", [])):
                self._ranks.setdefault(m, i)  # llama.cpp keeps the first rank of a repeated merge

        self._read_special_tokens(gguf, add_bos_default)

        if self._spm:
            self._add_space_prefix = bool(gguf.get("tokenizer.ggml.add_space_prefix", True))
            self._byte_ids = [self._byte_token(b) for b in range(256)]
        self.chat_template: str | None = gguf.get("tokenizer.chat_template")
        self._pieces: dict[int, bytes] = {}
        self._word_cache: dict[str, tuple[int, ...]] = {}
        # The vocabulary now lives here; the parsed metadata copy is dead weight.
        for key in ("tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.tokens", "tokenizer.ggml.scores"):
            gguf.meta.pop(key, None)

    # --- metadata ---------------------------------------------------------------------------

    def _read_special_tokens(self, gguf: GGUFFile, add_bos_default: bool) -> None:
        """Special ids, attribute fix-ups and the end-of-generation set, following llama.cpp's loader."""
        n, vocab, attr = len(self.tokens), self._vocab, self._attr

        def meta_id(name: str, default: int | None) -> int | None:
            if default is not None and not 0 <= default < n:
                default = None
            v = gguf.get(f"tokenizer.ggml.{name}_token_id")
            return int(v) if v is not None and 0 <= int(v) < n else default

        # SPM's historical defaults (LLaMA's <unk>=0, <s>=1, </s>=2); BPE files always carry theirs.
        self.bos_id = meta_id("bos", 1 if self._spm else None)
        self.eos_id = meta_id("eos", 2 if self._spm else None)
        self.unk_id = meta_id("unknown", 0 if self._spm else None)
        self.add_bos = bool(gguf.get("tokenizer.ggml.add_bos_token", add_bos_default))
        self.add_eos = bool(gguf.get("tokenizer.ggml.add_eos_token", False))
        if self.add_bos and self.bos_id is None:
            raise ModelFormatError(gguf.path, "tokenizer.ggml.add_bos_token is true but there is no BOS token")

        def find(names: Iterable[str]) -> int | None:
            ids = [vocab[t] for t in names if t in vocab]
            return min(ids) if ids else None

        def make_control(i: int) -> None:
            attr[i] |= A_CONTROL

        eot = meta_id("eot", None)
        if eot is None and (eot := find(_EOT_NAMES)) is not None:
            make_control(eot)
        eom = meta_id("eom", None)
        if eom is None and (eom := find(("<|eom_id|>",))) is not None:
            make_control(eom)
        fim: dict[str, int | None] = {}
        for role, names in _FIM_NAMES.items():
            i = next((v for v in (meta_id(k, None) for k in _FIM_KEYS[role]) if v is not None), None)
            if i is None and (i := find(names)) is not None:
                make_control(i)
            fim[role] = i

        for i in np.nonzero(attr & A_CONTROL)[0].tolist():
            if "unused" in self.tokens[i]:
                attr[i] |= A_UNUSED

        eog = {i for i in (fim["fim_pad"], fim["fim_rep"], fim["fim_sep"]) if i is not None}
        for name in _EOG_NAMES:
            if name in vocab:
                eog.add(vocab[name])
                make_control(vocab[name])
        for name in _ALWAYS_RENDERED:
            if name in vocab:
                attr[vocab[name]] = A_USER_DEFINED
        eog.update(i for i in (self.eos_id, eot, eom) if i is not None)
        # gpt-oss / solar-open end a message with <|end|> but the turn goes on.
        texts = {self.tokens[i] for i in eog}
        if "<|end|>" in texts and {"<|call|>", "<|calls|>"} & texts and {"<|return|>", "<|flush|>"} & texts:
            end = vocab["<|end|>"]
            eog.discard(end)
            attr[end] = A_USER_DEFINED
        # Gemma 4 uses </s> as a plain piece.
        if "<|tool_response>" in texts and "</s>" in texts:
            eog.discard(vocab["</s>"])
            attr[vocab["</s>"]] = A_NORMAL
        self.stop_ids = frozenset(int(i) for i in eog)

        special = np.nonzero(attr & _SPECIAL_ATTRS)[0]
        name = str(gguf.get("general.name", "")).lower()
        if "phi-3" in name or "phi3" in name:  # llama.cpp's per-model attribute patch
            attr[special] |= A_RSTRIP
            for t, on in (("</s>", True), ("<unk>", False), ("<s>", False), ("<|endoftext|>", False)):
                if t in vocab:
                    attr[vocab[t]] = (attr[vocab[t]] | A_RSTRIP) if on else (attr[vocab[t]] & (0xFFFF ^ A_RSTRIP))
        # Matched longest (in bytes) first; llama.cpp's sort leaves ties unordered, ids order them here.
        order = sorted(special.tolist(), key=lambda i: (-len(self.tokens[i].encode()), i))
        self._special_order = [(self.tokens[i], i, int(attr[i])) for i in order]
        self.special_ids = frozenset(int(i) for i in np.nonzero(attr & _SKIPPED_ATTRS)[0])
        self.user_defined_ids = frozenset(int(i) for i in np.nonzero(attr & A_USER_DEFINED)[0]) - self.special_ids

    def _byte_token(self, b: int) -> int:
        t = self._vocab.get(f"<0x{b:02X}>")
        if t is None and b < 128:
            t = self._vocab.get(chr(b))
        if t is None:
            # llama.cpp aborts here; a vocabulary without byte pieces cannot spell this character.
            t = self.unk_id if self.unk_id is not None else 0
        return t

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    # --- encoding ---------------------------------------------------------------------------

    def encode(self, text: str, add_bos: bool | None = None, *, continuation: bool = False) -> list[int]:
        """Token ids of ``text``. ``add_bos=None`` adds what the model asks for (BOS, EOS).

        ``continuation``: ``text`` continues earlier text (a grammar's forced bytes), so it gets no
        BOS/EOS and no SentencePiece space prefix.
        """
        if not isinstance(text, str):
            raise GenerationError(f"prompt must be str, got {type(text).__name__}")
        special = False if continuation else self.add_bos if add_bos is None else bool(add_bos)
        out: list[int] = []
        if special and self.bos_id is not None:
            out.append(self.bos_id)
        if text:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise GenerationError(f"prompt is not encodable as UTF-8 (lone surrogate at {exc.start})") from None
            pieces = self._partition(text)
            if self._spm:
                prev_special = not continuation  # the first piece gets the space prefix too
                for p in pieces:
                    if isinstance(p, int):
                        out.append(p)
                        prev_special = True
                    else:
                        if self._add_space_prefix and prev_special:
                            p = " " + p
                        self._spm_merge(p.replace(" ", _ESCAPED_SPACE), out)
                        prev_special = False
            else:
                for p in pieces:
                    if isinstance(p, int):
                        out.append(p)
                    else:
                        for word in self._pretokenize(p):
                            out.extend(self._bpe_word(word))
        if special and self.add_eos and self.eos_id is not None:
            out.append(self.eos_id)
        return out

    def _partition(self, text: str) -> list:
        """Text pieces (str) and special token ids (int), in order."""
        frags: list = [(0, len(text))]
        for tok, tid, attr in self._special_order:
            if tok not in text:
                continue
            size = len(tok)
            out: list = []
            for f in frags:
                if isinstance(f, int):
                    out.append(f)
                    continue
                pos, end = f
                while (m := text.find(tok, pos, end)) >= 0:
                    left = m
                    if attr & A_LSTRIP:
                        while left > pos and text[left - 1] in _C_ISSPACE:
                            left -= 1
                    if left > pos:
                        out.append((pos, left))
                    out.append(tid)
                    pos = m + size
                    if attr & A_RSTRIP:
                        while pos < end and text[pos] in _C_ISSPACE:
                            pos += 1
                if pos < end:
                    out.append((pos, end))
            frags = out
        return [f if isinstance(f, int) else text[f[0] : f[1]] for f in frags]

    def _spm_merge(self, text: str, out: list[int]) -> None:
        """SentencePiece BPE: repeatedly merge the adjacent pair whose joined text is the highest-scored
        piece (leftmost on ties), then spell unmatched characters as bytes."""
        vocab, score = self._vocab.get, self._scores

        def priority(a: str, b: str):
            t = vocab(a + b)
            return None if t is None else -score[t]

        byte_ids = self._byte_ids
        for piece in _merge(text, priority):
            t = vocab(piece)
            if t is not None:
                out.append(t)
            else:
                out.extend(byte_ids[b] for b in piece.encode())

    def _pretokenize(self, text: str) -> list[str]:
        col = _collapse(text)
        spans = [(0, len(text))]
        for pat in self._stages:
            out = []
            for start, end in spans:
                pos = start
                for m in pat.finditer(col, start, end):
                    a, b = m.span()
                    if a > pos:
                        out.append((pos, a))
                    if b > a:
                        out.append((a, b))
                    pos = b
                if pos < end:
                    out.append((pos, end))
            spans = out
        return [text[a:b] for a, b in spans]

    def _bpe_word(self, word: str) -> tuple[int, ...]:
        ids = self._word_cache.get(word)
        if ids is not None:
            return ids
        w = word.encode("utf-8").decode("latin-1").translate(_B2U)
        vocab = self._vocab
        if self._ignore_merges and w in vocab:
            ids = (vocab[w],)
        else:
            ids = tuple(self._bpe_merge(w))
        if len(self._word_cache) >= _MAX_CACHE:
            self._word_cache.clear()
        self._word_cache[word] = ids
        return ids

    def _bpe_merge(self, w: str) -> list[int]:
        """Rank-ordered BPE over one word: the adjacent pair with the lowest merge rank (leftmost on
        ties) merges first."""
        rank = self._ranks.get
        vocab = self._vocab
        out = []
        for sym in _merge(w, lambda a, b: rank(a + " " + b)):
            t = vocab.get(sym)
            if t is not None:
                out.append(t)
            else:  # only single-byte (ASCII) spellings can be looked up on their own, as in llama.cpp
                out.extend(vocab[c] for c in sym if c < "\x80" and c in vocab)
        return out

    # --- decoding ---------------------------------------------------------------------------

    def token_text(self, token_id: int | None) -> str:
        """A token's vocabulary spelling (``"<bos>"``, ``"▁the"``, ``"Ġthe"``); ``""`` for ``None``.

        Chat templates take ``bos_token``/``eos_token`` as this text, which is not what ``decode`` gives
        for SentencePiece or byte-level pieces.
        """
        if token_id is None:
            return ""
        if not 0 <= token_id < len(self.tokens):
            raise GenerationError(f"token id {token_id} is out of range [0, {len(self.tokens)})")
        return self.tokens[token_id]

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes token ``token_id`` stands for (llama.cpp ``token_to_piece`` with ``special=True``)."""
        b = self._pieces.get(token_id)
        if b is None:
            if not 0 <= token_id < len(self.tokens):
                raise GenerationError(f"token id {token_id} is out of range [0, {len(self.tokens)})")
            b = self._pieces[token_id] = self._piece(token_id)
        return b

    def _piece(self, i: int) -> bytes:
        a = int(self._attr[i])
        text = self.tokens[i]
        if a & _SPECIAL_ATTRS:
            return text.encode()
        if a & A_NORMAL:
            if self._spm:
                return text.replace(_ESCAPED_SPACE, " ").encode()
            out = bytearray()
            for ch in text:
                b = _U2B.get(ch)
                if b is not None:
                    out.append(b)
                else:  # not a byte-level spelling; llama.cpp marks it rather than guessing
                    out += b"[UNK_BYTE_0x" + ch.encode().hex().encode() + text.encode() + b"]"
            return bytes(out)
        if a & A_BYTE:
            digits = re.match(r"[0-9A-Fa-f]*", text[3:5]).group()
            return bytes([int(digits, 16) if digits else 0])
        return b""  # unused / undefined tokens render as nothing

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        skip = self.special_ids if skip_special else ()
        return b"".join(self.token_bytes(i) for i in ids if i not in skip).decode("utf-8", "replace")

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
