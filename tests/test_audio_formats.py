"""read_wav against independent references: Python's wave module and hand-built headers (struct) for every
layout, libsndfile (soundfile) when installed; and a typed, file-naming error for every malformed file."""

import struct
import wave

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from edgesdk._errors import InputError
from edgesdk.audio import read_wav

PCM, FLOAT, ALAW, MULAW, EXTENSIBLE = 1, 3, 6, 7, 0xFFFE
GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")
RNG = np.random.default_rng(7)


# ---- building files by hand ------------------------------------------------------------------------


def chunk(cid: bytes, body: bytes) -> bytes:
    return struct.pack("<4sI", cid, len(body)) + body + b"\0" * (len(body) & 1)


def fmt(tag, channels, rate, bits, align=None, ext_tag=None, valid_bits=None):
    align = channels * (bits // 8) if align is None else align
    body = struct.pack("<HHIIHH", tag, channels, rate, (rate * align) & 0xFFFFFFFF, align, bits)
    if tag == EXTENSIBLE:
        guid = struct.pack("<H", ext_tag) + GUID_TAIL
        body += struct.pack("<HHI", 22, bits if valid_bits is None else valid_bits, 0) + guid
    return chunk(b"fmt ", body)


def riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def write(tmp_path, data: bytes, name="x.wav"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def int_frames(width, frames, channels):
    """Random full-range integer samples (unsigned for 8-bit, as WAV stores them) and their bytes."""
    if width == 1:
        v = RNG.integers(0, 256, (frames, channels))
        return v, v.astype(np.uint8).tobytes()
    lo, hi = -(2 ** (8 * width - 1)), 2 ** (8 * width - 1)
    v = RNG.integers(lo, hi, (frames, channels), endpoint=False)
    v[0, 0], v[-1, -1] = lo, hi - 1  # the extremes must map to -1.0 and just below 1.0
    raw = b"".join(int(s).to_bytes(width, "little", signed=True) for s in v.ravel())
    return v, raw


def expected_mono(values, width=None):
    """The reference: samples scaled to [-1, 1) (integer PCM: 2**(bits-1) is full scale; 8-bit is offset
    by 128), channels averaged in float64, rounded to float32 once."""
    x = np.asarray(values, np.float64)
    if width == 1:
        x = (x - 128.0) / 128.0
    elif width is not None:
        x = x / 2.0 ** (8 * width - 1)
    return (x.sum(axis=1) / x.shape[1]).astype(np.float32)


# ---- integer PCM through the wave module -----------------------------------------------------------


@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", [1, 2, 5])
def test_pcm_written_by_the_wave_module(tmp_path, width, channels):
    values, raw = int_frames(width, 257, channels)
    p = tmp_path / "w.wav"
    with wave.open(str(p), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(22050)
        w.writeframes(raw)
    a = read_wav(p)
    assert a.sample_rate == 22050
    np.testing.assert_array_equal(a.samples, expected_mono(values, width))


# ---- layouts built by hand -------------------------------------------------------------------------


def test_float32_and_float64(tmp_path):
    x = RNG.uniform(-1, 1, (300, 2))
    for bits, dt in ((32, "<f4"), (64, "<f8")):
        p = write(tmp_path, riff(fmt(FLOAT, 2, 16000, bits), chunk(b"data", x.astype(dt).tobytes())), f"f{bits}.wav")
        np.testing.assert_array_equal(read_wav(p).samples, expected_mono(x.astype(dt)))


def test_float_samples_beyond_full_scale_are_kept(tmp_path):
    x = np.array([[1.5], [-2.0], [0.25]], np.float32)  # float WAV has headroom: no clipping on read
    p = write(tmp_path, riff(fmt(FLOAT, 1, 16000, 32), chunk(b"data", x.tobytes())))
    np.testing.assert_array_equal(read_wav(p).samples, [1.5, -2.0, 0.25])


@pytest.mark.parametrize("sub,bits,dt", [(PCM, 16, "<i2"), (PCM, 32, "<i4"), (FLOAT, 32, "<f4"), (FLOAT, 64, "<f8")])
def test_extensible_sub_format_decides(tmp_path, sub, bits, dt):
    values = RNG.integers(-30000, 30000, (99, 4)) if sub == PCM else RNG.uniform(-1, 1, (99, 4))
    raw = np.asarray(values).astype(dt).tobytes()
    p = write(tmp_path, riff(fmt(EXTENSIBLE, 4, 48000, bits, ext_tag=sub), chunk(b"data", raw)))
    want = expected_mono(values, bits // 8) if sub == PCM else expected_mono(values.astype(dt))
    np.testing.assert_array_equal(read_wav(p).samples, want)


def test_extensible_24_bit_samples_in_32_bit_containers(tmp_path):
    v = RNG.integers(-(2**23), 2**23, (64, 2))
    raw = (v.astype("<i4") << 8).tobytes()  # valid bits are left-justified in the container
    p = write(tmp_path, riff(fmt(EXTENSIBLE, 2, 44100, 32, ext_tag=PCM, valid_bits=24), chunk(b"data", raw)))
    np.testing.assert_array_equal(read_wav(p).samples, expected_mono(v, 3))


def test_chunks_in_any_order_and_odd_sizes_padded(tmp_path):
    values, raw = int_frames(1, 33, 1)  # 33 bytes of data: odd, so a pad byte follows it
    body = [chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00edge\x00"), chunk(b"data", raw), chunk(b"JUNK", b"abc"), fmt(PCM, 1, 8000, 8), chunk(b"cue ", b"\0" * 4)]
    p = write(tmp_path, riff(*body))
    np.testing.assert_array_equal(read_wav(p).samples, expected_mono(values, 1))


def test_a_trailing_partial_frame_is_dropped(tmp_path):
    values, raw = int_frames(2, 10, 2)
    p = write(tmp_path, riff(fmt(PCM, 2, 16000, 16), chunk(b"data", raw + b"\x01\x02\x03")))
    np.testing.assert_array_equal(read_wav(p).samples, expected_mono(values, 2))


def test_long_files_are_read_in_blocks_without_seams(tmp_path):
    v = RNG.integers(-32768, 32768, (300_001, 3))  # several read blocks, a partial last one
    p = write(tmp_path, riff(fmt(PCM, 3, 16000, 16), chunk(b"data", v.astype("<i2").tobytes())))
    np.testing.assert_array_equal(read_wav(p).samples, expected_mono(v, 2))


def test_reading_at_a_rate_equals_reading_then_resampling(tmp_path):
    v = RNG.integers(-20000, 20000, (100_000, 2))
    p = write(tmp_path, riff(fmt(PCM, 2, 48000, 16), chunk(b"data", v.astype("<i2").tobytes())))
    for rate in (16000, 44100, 48000):
        np.testing.assert_array_equal(read_wav(p, rate).samples, read_wav(p).to(rate).samples)
    with pytest.raises(InputError, match="sample_rate"):
        read_wav(p, 0)


# ---- libsndfile as the independent reference -------------------------------------------------------

SF_SUBTYPES = {"PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": None, "DOUBLE": None}


@pytest.mark.parametrize("container", ["WAV", "WAVEX"])
@pytest.mark.parametrize("subtype", list(SF_SUBTYPES))
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_matches_libsndfile(tmp_path, container, subtype, channels):
    sf = pytest.importorskip("soundfile")
    p = tmp_path / "sf.wav"
    sf.write(p, RNG.uniform(-1, 1, (1001, channels)), 32000, subtype=subtype, format=container)
    tag = struct.unpack_from("<H", p.read_bytes(), 20)[0]  # the fmt chunk follows the RIFF header there
    assert (tag == EXTENSIBLE) == (container == "WAVEX")
    ref, rate = sf.read(p, dtype="float64", always_2d=True)
    a = read_wav(p)
    assert a.sample_rate == rate == 32000
    want = expected_mono(ref)
    if subtype == "DOUBLE":  # float64 sums of 6 channels may round differently by order: allow one float32 ulp
        np.testing.assert_array_max_ulp(a.samples, want, maxulp=1)
    else:
        np.testing.assert_array_equal(a.samples, want)


# ---- refusals: typed, naming the file and the cause --------------------------------------------------


def _data(n=8):
    return chunk(b"data", b"\0" * n)


BAD = {
    "empty": (b"", "not a PCM WAV file"),
    "not riff": (b"RIFF\x00\x00not a wave", "not a PCM WAV file"),
    "rifx": (b"RIFX\0\0\0\0WAVE", "big-endian RIFX"),
    "rf64": (b"RF64\xff\xff\xff\xffWAVE" + chunk(b"ds64", b"\0" * 28), "RF64"),
    "a-law": (riff(fmt(ALAW, 1, 8000, 8), _data()), r"A-law-encoded \(format tag 0x0006\) WAV files are not supported, only uncompressed PCM or float"),
    "mu-law": (riff(fmt(MULAW, 1, 8000, 8), _data()), "mu-law-encoded"),
    "mp3": (riff(fmt(0x55, 2, 44100, 0, align=1), _data()), r"MPEG Layer III \(MP3\)-encoded"),
    "adpcm": (riff(fmt(0x11, 1, 8000, 4, align=256), _data()), "IMA ADPCM-encoded"),
    "unknown codec": (riff(fmt(0x1234, 1, 8000, 16), _data()), "WAV files with format tag 0x1234 are not supported"),
    "extensible a-law": (riff(fmt(EXTENSIBLE, 1, 8000, 8, ext_tag=ALAW), _data()), "A-law-encoded"),
    "extensible foreign guid": (
        riff(chunk(b"fmt ", fmt(EXTENSIBLE, 1, 8000, 16, ext_tag=PCM)[8:-16] + b"\x01" * 16), _data()),
        "sub-format {01010101-0101-0101-0101-010101010101} is not supported",
    ),
    "extensible short": (riff(chunk(b"fmt ", fmt(EXTENSIBLE, 1, 8000, 16, ext_tag=PCM)[8:-4]), _data()), "WAVE_FORMAT_EXTENSIBLE 'fmt ' chunk has 36 bytes"),
    "valid bits over container": (riff(fmt(EXTENSIBLE, 1, 8000, 16, ext_tag=PCM, valid_bits=24), _data()), "24 valid bits in a 16-bit sample"),
    "zero channels": (riff(fmt(PCM, 0, 8000, 16, align=2), _data()), "0 channels"),
    "zero rate": (riff(fmt(PCM, 1, 0, 16), _data()), "sample rate 0 Hz is outside"),
    "absurd rate": (riff(fmt(PCM, 1, 4_000_000_000, 16), _data()), "sample rate 4000000000 Hz is outside"),
    "zero block align": (riff(fmt(PCM, 2, 8000, 16, align=0), _data()), "cannot be 0 bytes"),
    "block align not per channel": (riff(fmt(PCM, 2, 8000, 16, align=3), _data()), "cannot be 3 bytes"),
    "zero bits": (riff(fmt(PCM, 1, 8000, 0, align=2), _data()), "0-bit integer PCM samples"),
    "bits over container": (riff(fmt(PCM, 1, 8000, 24, align=2), _data()), "24-bit integer PCM samples in 2-byte"),
    "5-byte pcm": (riff(fmt(PCM, 1, 8000, 40), _data(10)), "40-bit integer PCM"),
    "16-bit float": (riff(fmt(FLOAT, 1, 8000, 16), _data()), "16-bit float samples"),
    "short fmt": (riff(chunk(b"fmt ", b"\x01\x00\x01\x00"), _data()), "'fmt ' chunk has 4 bytes"),
    "huge fmt": (riff(b"fmt " + struct.pack("<I", 1 << 20) + b"\0" * (1 << 20)), "'fmt ' chunk declares 1048576"),
    "no fmt": (riff(_data()), "no 'fmt ' chunk"),
    "no data": (riff(fmt(PCM, 1, 8000, 16)), "no 'data' chunk"),
    "no samples": (riff(fmt(PCM, 1, 8000, 16), chunk(b"data", b"")), "has no samples"),
    "truncated data": (
        riff(fmt(PCM, 1, 8000, 16), struct.pack("<4sI", b"data", 1000) + b"\0" * 10),
        "the 'data' chunk at byte 36 declares 1000 bytes, only 10 follow",
    ),
    "absurd chunk size": (
        riff(struct.pack("<4sI", b"LIST", 0xFFFFFFFF), fmt(PCM, 1, 8000, 16), _data()),
        "the 'LIST' chunk at byte 12 declares 4294967295 bytes",
    ),
    "nan samples": (riff(fmt(FLOAT, 1, 8000, 32), chunk(b"data", np.array([0, np.nan], "<f4").tobytes())), "NaN, infinity"),
    "infinite samples": (riff(fmt(FLOAT, 1, 8000, 64), chunk(b"data", np.array([np.inf], "<f8").tobytes())), "NaN, infinity"),
    "beyond float32": (riff(fmt(FLOAT, 2, 8000, 64), chunk(b"data", np.array([1e300, 1e300], "<f8").tobytes())), "values beyond float32"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_files_get_a_typed_error_naming_file_and_cause(tmp_path, name):
    data, cause = BAD[name]
    p = write(tmp_path, data, "bad file.wav")
    with pytest.raises(InputError, match=cause) as err:
        read_wav(p)
    assert str(err.value).startswith(f"{p}: ")


def test_missing_and_unreadable_paths(tmp_path):
    with pytest.raises(InputError, match="no such WAV file"):
        read_wav(tmp_path / "missing.wav")
    with pytest.raises(InputError, match="cannot read the WAV file"):
        read_wav(tmp_path)  # a directory


VALID = [
    riff(fmt(PCM, 2, 16000, 16), _data(64)),
    riff(fmt(FLOAT, 1, 8000, 32), chunk(b"JUNK", b"x"), _data(64)),
    riff(fmt(EXTENSIBLE, 3, 44100, 24, ext_tag=PCM), _data(63)),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(VALID), st.data())
def test_mutated_files_never_raise_anything_but_input_error(tmp_path, original, data):
    b = bytearray(original)
    if data.draw(st.booleans(), "truncate"):
        b = b[: data.draw(st.integers(0, len(b) - 1), "at")]
    for _ in range(data.draw(st.integers(0, 4), "flips")):
        if b:
            b[data.draw(st.integers(0, len(b) - 1), "pos")] = data.draw(st.integers(0, 255), "byte")
    p = write(tmp_path, bytes(b), "m.wav")
    try:
        a = read_wav(p)
    except InputError as exc:
        assert str(exc).startswith(f"{p}: ")
    else:
        assert a.samples.dtype == np.float32 and np.isfinite(a.samples).all()
