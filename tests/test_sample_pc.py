"""samples/pc (document summarizer) and the OCR it is built on: accuracy on a rendered page,
upside-down text, bad input, and proof that a private document is never sent to the cloud."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from edgesdk._errors import ImageLoadError, ImageNotFoundError, InputDtypeError, InputShapeError, ModelFormatError
from edgesdk.audio import word_error_rate
from edgesdk.vision import TextRecognizer, label_components

from conftest import hub_path

PIL = pytest.importorskip("PIL", reason="pages are rendered with Pillow")
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAGE = [
    "Meeting notes, 3 March.",
    "The Lisbon office will move to a larger building in June.",
    "Rent rises by ten percent, but the new space has room",
    "for forty more engineers and a small hardware lab.",
    "Anna will sign the lease on Friday.",
    "Everyone should pack their desks by the end of May.",
]


def render(lines, size=30, width=1000) -> np.ndarray:
    """A page of black text on white in Pillow's bundled TrueType font (no system fonts needed)."""
    font = ImageFont.load_default(size=size)
    step = int(size * 1.6)
    im = Image.new("RGB", (width, 60 + len(lines) * step), "white")
    draw = ImageDraw.Draw(im)
    for i, line in enumerate(lines):
        draw.text((40, 30 + i * step), line, fill="black", font=font)
    return np.asarray(im)


def char_error_rate(ref: str, hyp: str) -> float:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)


@pytest.fixture(scope="module")
def ocr():
    for name in ("ppocr-det", "ppocr-cls", "ppocr-rec"):
        hub_path(name)
    with TextRecognizer() as r:
        yield r


# PP-OCRv4 reads clean 30 px print almost perfectly; its one habit on English is dropping a narrow
# inter-word space, which costs two word errors (a merged word) but one character. The bounds allow
# two such merges on this 52-word page, and a few wrong characters, not a missing line.
MAX_WER, MAX_CER = 0.08, 0.03


def test_ocr_reads_a_rendered_page_in_reading_order(ocr):
    lines = ocr.read_text(render(PAGE))
    text = "\n".join(line.text for line in lines)
    assert len(lines) == len(PAGE), text
    assert word_error_rate(" ".join(PAGE), text) <= MAX_WER, text
    assert char_error_rate("\n".join(PAGE), text) <= MAX_CER, text
    ys = [line.box[1] for line in lines]
    assert ys == sorted(ys)
    for line in lines:
        box, txt, score = line  # unpacks as (box, text, score)
        assert 0 <= box[0] < box[2] <= 1000 and 0.5 <= score <= 1


def test_ocr_reads_an_upside_down_page(ocr):
    lines = ocr.read_text(render(PAGE)[::-1, ::-1])
    assert word_error_rate(" ".join(PAGE), " ".join(line.text for line in lines)) <= MAX_WER


def test_ocr_finds_nothing_on_a_blank_page(ocr):
    assert ocr.read_text(np.full((400, 600, 3), 255, np.uint8)) == []
    assert ocr.recognize([]) == []


def test_ocr_reads_files_grey_and_rgba_images(ocr, tmp_path):
    page = render(PAGE[:2])
    Image.fromarray(page).save(tmp_path / "page.png")
    from_file = [line.text for line in ocr.read_text(tmp_path / "page.png")]
    assert from_file == [line.text for line in ocr.read_text(page[:, :, 0])]  # grey
    rgba = np.concatenate([page, np.full(page.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert from_file == [line.text for line in ocr.read_text(rgba)]


def test_ocr_bad_input_is_a_typed_error(ocr, tmp_path):
    page = render(PAGE[:1])
    with pytest.raises(InputDtypeError, match="uint8"):
        ocr.read_text(page.astype(np.float32) / 255)
    with pytest.raises(InputShapeError, match=r"\(H, W, 3\)"):
        ocr.read_text(page[:, :, :2])
    with pytest.raises(InputShapeError):
        ocr.read_text(page[None])
    with pytest.raises(InputShapeError, match="at least 2x2"):
        ocr.read_text(np.zeros((1, 50, 3), np.uint8))
    with pytest.raises(InputDtypeError):
        ocr.read_text([[1, 2], [3, 4]])
    with pytest.raises(ImageNotFoundError, match="no such file") as ei:
        ocr.read_text(tmp_path / "missing.png")
    assert isinstance(ei.value, FileNotFoundError)
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageLoadError, match="junk.png"):
        ocr.read_text(tmp_path / "junk.png")


def test_a_recognizer_without_an_alphabet_is_refused():
    with pytest.raises(ModelFormatError, match="character"):
        TextRecognizer(rec="hub:ppocr-det", classify=False)


def test_ctc_decoding_collapses_repeats_between_blanks(ocr):
    chars = ocr.characters
    a, b = chars.index("a"), chars.index("b")
    steps = [a, a, 0, a, b, b, 0, 0, len(chars) - 1, b]  # a a _ a b b _ _ ' ' b
    probs = np.full((len(steps), len(chars)), 0.01, np.float32)
    probs[np.arange(len(steps)), steps] = 0.9
    assert ocr._ctc_decode(probs) == ("aab b", pytest.approx(0.9))
    assert ocr._ctc_decode(np.eye(len(chars), dtype=np.float32)[[0, 0]]) == ("", 0.0)


def _flood_components(mask):
    """Reference: 8-connected flood fill, one pixel at a time."""
    seen = np.zeros_like(mask, bool)
    comps = []
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        stack, pix = [(y, x)], set()
        seen[y, x] = True
        while stack:
            cy, cx = stack.pop()
            pix.add((cy, cx))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = cy + dy, cx + dx
                    if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
        comps.append(frozenset(pix))
    return set(comps)


@pytest.mark.parametrize("density", [0.2, 0.45, 0.7])
def test_run_labeling_matches_a_flood_fill(rng, density):
    for _ in range(5):
        mask = rng.random((23, 31)) < density
        runs, labels = label_components(mask)
        comps: dict[int, set] = {}
        for (y, x0, x1), lab in zip(runs.tolist(), labels.tolist()):
            comps.setdefault(lab, set()).update((y, x) for x in range(x0, x1))
        assert {frozenset(c) for c in comps.values()} == _flood_components(mask)
    runs, labels = label_components(np.zeros((4, 4), bool))
    assert runs.shape == (0, 3) and labels.shape == (0,)


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A cloud endpoint that only records what reaches it."""

    seen: list = []

    def _record(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.seen.append((self.command, self.path, self.rfile.read(n)))
        self.send_response(503)
        self.end_headers()

    do_GET = do_POST = _record

    def log_message(self, *args):
        pass


@pytest.fixture
def cloud():
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.seen
    server.shutdown()
    server.server_close()


def test_sample_summarizes_on_the_device_and_sends_nothing(tmp_path, cloud):
    hub_path("smollm2-135m")
    url, seen = cloud
    page = tmp_path / "page.png"
    Image.fromarray(render(PAGE)).save(page)
    audit = tmp_path / "audit.jsonl"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "samples/pc/summarize.py"), str(page), "--cloud", url, "--audit", str(audit), "--max-tokens", "48"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "The Lisbon office will move to a larger building in June." in out
    summary = out.split("== summary ==\n", 1)[1].split("\nroute:", 1)[0]
    assert summary.strip(), out
    assert "route: device (request marked private)" in out
    report = out.split("== report ==\n", 1)[1]
    assert "ocr" in report and "det=" in report and "rec=" in report
    assert "summarize" in report and "llm=cpu:0 [cpu]" in report
    assert seen == [], "a private document reached the cloud"
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(r["route"], r["sent"], r["destination"]) for r in records] == [("device", None, None)]
    # The recorder does see traffic that is sent to it, so the empty list above means something.
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(url + "/v1/models", timeout=5)
    assert seen and seen[0][:2] == ("GET", "/v1/models")


def test_sample_names_a_missing_page(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "samples/pc/summarize.py"), str(tmp_path / "nope.png")], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert proc.returncode == 2
    assert "nope.png" in proc.stderr and "no such file" in proc.stderr
