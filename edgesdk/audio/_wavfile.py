"""RIFF/WAVE parsing and block-wise decoding: integer PCM (8-bit unsigned, 16/24/32-bit), IEEE float
(32/64-bit), plain or WAVE_FORMAT_EXTENSIBLE, any channel count (averaged to mono).

The data chunk is read a block at a time, so decoding holds a few hundred KiB besides the caller's output.
Every refusal is an :class:`InputError` that names the file and says what is wrong in words.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import attrs
import numpy as np

from .._errors import InputError

__all__ = ["WavReader"]

_PCM, _FLOAT, _EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
# The KSDATAFORMAT_SUBTYPE_* GUIDs of WAVE_FORMAT_EXTENSIBLE: a format tag in the first two bytes, then this.
_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")
_CODECS = {
    0x0002: "Microsoft ADPCM",
    0x0006: "A-law",
    0x0007: "mu-law",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0040: "G.721 ADPCM",
    0x0050: "MPEG audio",
    0x0055: "MPEG Layer III (MP3)",
    0x0092: "Dolby AC-3",
    0x00FF: "AAC",
    0x1610: "MPEG-4 AAC",
    0x2000: "Dolby AC-3",
    0xF1AC: "FLAC",
}
_HEADERS = {b"RIFX": "big-endian RIFX WAV", b"RF64": "RF64 (over 4 GiB) WAV", b"BW64": "BW64 (over 4 GiB) WAV"}
_MAX_FMT = 1 << 16  # a real fmt chunk is 16-40 bytes; a larger one is a corrupt size field
_BLOCK_BYTES = 1 << 18


@attrs.frozen
class _Format:
    float: bool
    width: int  # bytes per sample in the container
    channels: int
    sample_rate: int


class WavReader:
    """An open WAV file: ``sample_rate`` and ``frames`` from its header, :meth:`blocks` for mono float32."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._f: BinaryIO = open(path, "rb")
        except FileNotFoundError:
            raise InputError(f"{path}: no such WAV file") from None
        except OSError as exc:
            raise InputError(f"{path}: cannot read the WAV file ({exc.strerror or exc})") from None
        try:
            self._fmt, self._data_offset, data_size = self._parse()
        except BaseException:
            self._f.close()
            raise
        self._frame_bytes = self._fmt.width * self._fmt.channels
        # A trailing partial frame is dropped, as libsndfile and the wave module do.
        self.frames = data_size // self._frame_bytes
        self.sample_rate = self._fmt.sample_rate

    def __enter__(self) -> WavReader:
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()

    def _fail(self, cause: str) -> InputError:
        return InputError(f"{self.path}: {cause}")

    def _read(self, offset: int, size: int, what: str) -> bytes:
        try:
            self._f.seek(offset)
            raw = self._f.read(size)
        except OSError as exc:
            raise self._fail(f"cannot read the WAV file ({exc.strerror or exc})") from None
        if len(raw) != size:
            raise self._fail(f"truncated WAV file: the {what} at byte {offset} needs {size} bytes, the file ends after {len(raw)}")
        return raw

    def _parse(self) -> tuple[_Format, int, int]:
        """Walk the chunks in any order (odd sizes padded) until both 'fmt ' and 'data' are found."""
        file_size = os.fstat(self._f.fileno()).st_size
        head = self._read(0, 12, "RIFF header") if file_size >= 12 else b""
        if head[:4] in _HEADERS and head[8:12] == b"WAVE":
            raise self._fail(f"{_HEADERS[head[:4]]} files are not supported; convert to a standard RIFF WAV")
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise self._fail("not a PCM WAV file (it has no RIFF/WAVE header)")
        fmt = data = None
        pos = 12
        while pos + 8 <= file_size and (fmt is None or data is None):
            cid, size = struct.unpack("<4sI", self._read(pos, 8, "chunk header"))
            body = pos + 8
            if body + size > file_size:
                raise self._fail(f"truncated or corrupt WAV file: the {_name(cid)} chunk at byte {pos} declares {size} bytes, only {file_size - body} follow")
            if cid == b"fmt " and fmt is None:
                if size > _MAX_FMT:
                    raise self._fail(f"corrupt WAV file: its 'fmt ' chunk declares {size} bytes")
                fmt = self._format(self._read(body, size, "'fmt ' chunk"))
            elif cid == b"data" and data is None:
                data = (body, size)
            pos = body + size + (size & 1)
        if fmt is None:
            raise self._fail("corrupt WAV file: it has no 'fmt ' chunk describing the samples")
        if data is None:
            raise self._fail("corrupt WAV file: it has no 'data' chunk")
        return fmt, data[0], data[1]

    def _format(self, raw: bytes) -> _Format:
        if len(raw) < 16:
            raise self._fail(f"corrupt WAV file: its 'fmt ' chunk has {len(raw)} bytes, at least 16 are needed")
        tag, channels, rate, _byte_rate, align, bits = struct.unpack_from("<HHIIHH", raw)
        if tag == _EXTENSIBLE:
            tag = self._subformat(raw, bits)
        if tag not in (_PCM, _FLOAT):
            what = f"{_CODECS[tag]}-encoded (format tag 0x{tag:04x}) WAV files" if tag in _CODECS else f"WAV files with format tag 0x{tag:04x}"
            raise self._fail(f"{what} are not supported, only uncompressed PCM or float (convert with e.g. `ffmpeg -i in.wav -c:a pcm_s16le out.wav`)")
        if channels == 0:
            raise self._fail("corrupt WAV file: its header says 0 channels")
        if align == 0 or align % channels:
            raise self._fail(f"corrupt WAV file: a frame of {channels} channels cannot be {align} bytes")
        width = align // channels
        is_float = tag == _FLOAT
        # Narrower samples sit left-justified in their container, so decoding the container is exact.
        if bits == 0 or bits > 8 * width or width not in ((4, 8) if is_float else (1, 2, 3, 4)) or (is_float and bits != 8 * width):
            kind = "float" if is_float else "integer PCM"
            raise self._fail(
                f"{bits}-bit {kind} samples in {width}-byte containers are not supported (8-bit unsigned, 16/24/32-bit PCM and 32/64-bit float are)"
            )
        return _Format(is_float, width, channels, rate)

    def _subformat(self, raw: bytes, bits: int) -> int:
        """The format tag that WAVE_FORMAT_EXTENSIBLE's sub-format GUID carries."""
        if len(raw) < 40:
            raise self._fail(f"corrupt WAV file: its WAVE_FORMAT_EXTENSIBLE 'fmt ' chunk has {len(raw)} bytes, 40 are needed")
        (valid_bits,) = struct.unpack_from("<H", raw, 18)
        guid = raw[24:40]
        if guid[2:] != _GUID_TAIL:
            raise self._fail(f"WAVE_FORMAT_EXTENSIBLE sub-format {_guid(guid)} is not supported (only PCM and IEEE float are)")
        if valid_bits > bits:
            raise self._fail(f"corrupt WAV file: {valid_bits} valid bits in a {bits}-bit sample")
        return struct.unpack_from("<H", guid)[0]

    def blocks(self) -> Iterator[np.ndarray]:
        """The samples as float32 blocks, channels averaged."""
        per_block = max(1, _BLOCK_BYTES // self._frame_bytes)
        for first in range(0, self.frames, per_block):
            n = min(per_block, self.frames - first)
            raw = self._read(self._data_offset + first * self._frame_bytes, n * self._frame_bytes, "sample data")
            yield self._mono(_decode(raw, self._fmt))

    def _mono(self, x: np.ndarray) -> np.ndarray:
        channels = self._fmt.channels
        # Summed in float64, where integer samples add exactly in any order, then rounded to float32 once;
        # a matrix-vector product because numpy's mean over a short last axis is ~10x slower.
        with np.errstate(over="ignore", invalid="ignore"):  # huge float64 samples are refused just below
            mono = x if channels == 1 else x.reshape(-1, channels) @ np.ones(channels) / channels
            mono = mono.astype(np.float32)
        if self._fmt.float and not np.isfinite(mono).all():
            raise self._fail("corrupt WAV file: its float samples contain NaN, infinity or values beyond float32")
        return mono


def _decode(raw: bytes, fmt: _Format) -> np.ndarray:
    """Interleaved samples as float64 in [-1, 1): full-scale integers map to -1.0, as libsndfile reads them."""
    if fmt.float:
        return np.frombuffer(raw, "<f4" if fmt.width == 4 else "<f8").astype(np.float64)
    # Each sample becomes the top bytes of an int32 read in place at a stride of one sample (the bytes below
    # belong to its neighbour and are masked off), so one scale serves 8, 16, 24 and 32 bits.
    low = 4 - fmt.width
    words = np.ndarray((len(raw) // fmt.width,), "<i4", bytes(low) + raw, 0, (fmt.width,))
    words = words & np.int32(-1 << 8 * low)
    if fmt.width == 1:
        words ^= np.int32(-1 << 31)  # 8-bit WAV is unsigned with 128 as silence: flip to two's complement
    return words / 2147483648.0


def _name(cid: bytes) -> str:
    return repr(cid.decode("latin-1"))


def _guid(g: bytes) -> str:
    a, b, c = struct.unpack_from("<IHH", g)
    return f"{{{a:08x}-{b:04x}-{c:04x}-{g[8:10].hex()}-{g[10:].hex()}}}"
