"""Printed-text OCR with the PP-OCR models (detect lines, fix upside-down lines, recognise them).

The three ONNX models run through :class:`edgesdk.Session`; everything around them (DB-style
detection post-processing, crops, CTC decoding) is numpy. Lines are found as axis-aligned boxes,
so text tilted by more than a few degrees is not handled; upside-down lines are (direction classifier).
"""

from __future__ import annotations

import logging
import math
from typing import Iterator, Sequence

import attrs
import numpy as np

from .._errors import ModelFormatError
from .._options import SessionOptions
from .._block import SessionBlock
from ._image import as_rgb, resize

__all__ = ["TextRecognizer", "TextLine", "label_components"]

log = logging.getLogger("edgesdk.vision")


@attrs.frozen
class TextLine:
    """One recognised line: ``box`` (x0, y0, x1, y1) in image pixels, end exclusive; ``score`` is the
    mean probability of the decoded characters (0..1)."""

    box: tuple[int, int, int, int]
    text: str
    score: float

    def __iter__(self) -> Iterator:
        return iter((self.box, self.text, self.score))  # unpacks as (box, text, score)


def label_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of a boolean (H, W) mask, found on horizontal runs of pixels.

    Returns ``runs`` (N, 3) int64 rows of (y, x_start, x_end exclusive) and ``labels`` (N,), one
    component id per run, numbered 0..K-1 in order of first appearance. A page has a few thousand
    runs where it has hundreds of thousands of pixels, so a Python loop over runs stays fast.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    ys, xs = np.nonzero(edges == 1)
    _, xe = np.nonzero(edges == -1)  # row-major order pairs every start with its end
    runs = np.stack([ys, xs, xe], axis=1).astype(np.int64)
    n = len(runs)
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    row_start = np.searchsorted(runs[:, 0], np.arange(mask.shape[0] + 1)) if n else np.zeros(mask.shape[0] + 1, np.int64)
    run_list = runs.tolist()
    for y in range(1, mask.shape[0]):
        a, a_end = int(row_start[y - 1]), int(row_start[y])
        b, b_end = int(row_start[y]), int(row_start[y + 1])
        while a < a_end and b < b_end:
            _, pa0, pa1 = run_list[a]
            _, pb0, pb1 = run_list[b]
            if pa0 <= pb1 and pb0 <= pa1:  # touching, diagonals included (ends are exclusive)
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
            if pa1 < pb1:
                a += 1
            else:
                b += 1
    roots = np.fromiter((find(i) for i in range(n)), np.int64, n)
    _, labels = np.unique(roots, return_inverse=True)
    return runs, labels.reshape(-1)


def _character_list(path: str) -> list[str]:
    """The recognition model's alphabet: CTC blank, the model's ``character`` metadata, then space."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    if "character" not in meta:
        raise ModelFormatError(path, "has no 'character' metadata (the PP-OCR recognition alphabet)")
    return ["<blank>", *meta["character"].splitlines(), " "]


class TextRecognizer(SessionBlock):
    """Reads printed text in an image with PP-OCRv4 (``hub:ppocr-det``, ``hub:ppocr-cls``, ``hub:ppocr-rec``).

    ``read_text(image)`` returns :class:`TextLine` objects in reading order (top to bottom, left to
    right). ``classify=False`` skips the direction classifier (saves a model when every line is upright).
    ``det_threshold`` binarises the text-probability map; ``box_threshold`` drops regions whose mean
    probability is lower; ``min_score`` drops lines recognised with less confidence. The detector sees
    the image scaled to at most ``det_max_side`` pixels on its long side (at least ``det_min_side`` on
    its short side): raise it for pages of small print. With the classifier,
    lines it calls upside down and lines read with less than ``retry_below`` confidence are also read
    turned by 180 degrees, and the more confident reading is kept.
    """

    def __init__(
        self,
        options: SessionOptions | None = None,
        *,
        det: str = "hub:ppocr-det",
        rec: str = "hub:ppocr-rec",
        cls: str | None = "hub:ppocr-cls",
        classify: bool = True,
        det_threshold: float = 0.3,
        box_threshold: float = 0.5,
        unclip_ratio: float = 1.6,
        min_score: float = 0.5,
        det_min_side: int = 64,
        det_max_side: int = 960,
        batch_size: int = 6,
        retry_below: float = 0.8,
    ):
        from .._session import Session

        for name, v in (("det_threshold", det_threshold), ("box_threshold", box_threshold), ("min_score", min_score)):
            if not 0 <= v <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")
        if det_min_side < 32 or det_max_side < det_min_side:
            raise ValueError(f"need 32 <= det_min_side <= det_max_side, got {det_min_side}, {det_max_side}")
        self.det_threshold, self.box_threshold, self.unclip_ratio = det_threshold, box_threshold, unclip_ratio
        self.min_score, self.det_min_side, self.det_max_side, self.batch_size = min_score, det_min_side, det_max_side, batch_size
        self.retry_below = retry_below
        opts = options or SessionOptions()
        self._sessions: dict[str, Session] = {}
        try:
            self._sessions["det"] = Session(det, opts)
            if classify and cls is not None:
                self._sessions["cls"] = Session(cls, opts)
            self._sessions["rec"] = rec_s = Session(rec, opts)
            self.characters = _character_list(rec_s.model.path)
        except BaseException:
            self.close()
            raise
        n_out = rec_s.outputs[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(self.characters):
            raise ModelFormatError(rec_s.model.path, f"predicts {n_out} classes but its alphabet has {len(self.characters)}")
        self._rec_height = rec_s.inputs[0].shape[2] if isinstance(rec_s.inputs[0].shape[2], int) else 48

    @property
    def sessions(self) -> dict:
        """The sessions this recognizer runs ("det", "cls" when used, "rec"), for placement reports."""
        return dict(self._sessions)

    # -- the whole thing --------------------------------------------------------------------------

    def read_text(self, image) -> list[TextLine]:
        """Every line of text in ``image`` (uint8 RGB array, path or Pillow image), in reading order."""
        rgb = as_rgb(image)
        boxes = self.detect(rgb)
        crops = [self._crop(rgb, b) for b in boxes]
        read = self.recognize(crops)
        turned = set()
        if "cls" in self._sessions and crops:
            # The direction classifier sees a line squashed to 192 pixels: it calls some long upright
            # lines upside down and misses some turned ones. So it only proposes a turn, as does a
            # weak reading (turned text reads as garbage, < 0.5 here, where upright lines score > 0.9);
            # the recognizer's confidence on both readings decides.
            weak = {i for i, (_, score) in enumerate(read) if score < self.retry_below}
            turn = sorted(weak.union(self._upside_down(crops)))
            again = self.recognize([np.ascontiguousarray(crops[i][::-1, ::-1]) for i in turn]) if turn else []
            for i, r in zip(turn, again):
                if r[1] > read[i][1]:
                    read[i] = r
                    turned.add(i)
        lines, flipped = [], 0
        for i, (box, (text, score)) in enumerate(zip(boxes, read)):
            if text.strip() and score >= self.min_score:
                lines.append(TextLine(box, text, score))
                flipped += i in turned
        if flipped * 2 > len(lines):
            lines.reverse()  # the page itself is upside down: its first line is at the bottom right
        log.debug("read %d lines (%d regions)", len(lines), len(boxes))
        return lines

    # -- detection --------------------------------------------------------------------------------

    def _det_size(self, h: int, w: int) -> tuple[int, int]:
        # PaddleOCR's default for documents: shrink to a 960 long side, never enlarge a readable page
        # (enlarging a 1000x350 page to a 736 short side tripled the detector's work for no gain).
        scale = min(1.0, self.det_max_side / max(h, w))
        if min(h, w) * scale < self.det_min_side:
            scale = self.det_min_side / min(h, w)
        # The network downsamples by 32; other sizes misalign its feature maps.
        return max(32, int(round(h * scale / 32)) * 32), max(32, int(round(w * scale / 32)) * 32)

    def detect(self, image) -> list[tuple[int, int, int, int]]:
        """Boxes (x0, y0, x1, y1) of text lines, sorted in reading order."""
        rgb = as_rgb(image)
        h, w = rgb.shape[:2]
        dh, dw = self._det_size(h, w)
        # PaddleOCR trains on OpenCV-decoded (BGR) images: feed BGR, normalised to [-1, 1].
        x = (resize(rgb[:, :, ::-1], dh, dw) / 127.5 - 1.0).transpose(2, 0, 1)[None]
        det = self._sessions["det"]
        prob = det.run({det.inputs[0].name: np.ascontiguousarray(x, np.float32)})[det.outputs[0].name][0, 0]
        mask = prob > self.det_threshold
        # A 2x2 dilation joins characters the thresholded map leaves apart (as PaddleOCR's use_dilation).
        mask[1:, :] |= mask[:-1, :]
        mask[:, 1:] |= mask[:, :-1]
        return self._boxes(prob, mask, h / dh, w / dw)

    def _boxes(self, prob, mask, sy, sx):
        runs, labels = label_components(mask)
        if not len(runs):
            return []
        k = int(labels.max()) + 1
        csum = np.concatenate([np.zeros((prob.shape[0], 1)), np.cumsum(prob, axis=1, dtype=np.float64)], axis=1)
        run_sum = csum[runs[:, 0], runs[:, 2]] - csum[runs[:, 0], runs[:, 1]]
        area = np.bincount(labels, runs[:, 2] - runs[:, 1], k)
        score = np.bincount(labels, run_sum, k) / area
        x0 = np.full(k, np.iinfo(np.int64).max)
        y0 = x0.copy()
        x1 = np.full(k, -1)
        y1 = x1.copy()
        np.minimum.at(x0, labels, runs[:, 1])
        np.minimum.at(y0, labels, runs[:, 0])
        np.maximum.at(x1, labels, runs[:, 2])
        np.maximum.at(y1, labels, runs[:, 0] + 1)
        boxes = []
        H, W = mask.shape
        for i in range(k):
            bw, bh = x1[i] - x0[i], y1[i] - y0[i]
            if min(bw, bh) < 3 or score[i] < self.box_threshold:
                continue
            # DB predicts text shrunk by a margin that grows with the region: area * ratio / perimeter undoes it.
            d = bw * bh * self.unclip_ratio / (2 * (bw + bh))
            ex0, ey0 = max(0.0, x0[i] - d), max(0.0, y0[i] - d)
            ex1, ey1 = min(float(W), x1[i] + d), min(float(H), y1[i] + d)
            box = (int(math.floor(ex0 * sx)), int(math.floor(ey0 * sy)), int(math.ceil(ex1 * sx)), int(math.ceil(ey1 * sy)))
            if min(box[2] - box[0], box[3] - box[1]) >= 5:
                boxes.append(box)
        return _reading_order(boxes)

    # -- direction and recognition ----------------------------------------------------------------

    @staticmethod
    def _crop(rgb, box):
        x0, y0, x1, y1 = box
        crop = rgb[y0:y1, x0:x1]
        if crop.shape[0] >= 1.5 * crop.shape[1]:
            crop = np.rot90(crop)  # a tall box is vertical text: read it turned, as PaddleOCR does
        return crop

    def _normalise(self, crops: Sequence[np.ndarray], width: int) -> np.ndarray:
        """Crops resized to the model height keeping their aspect, padded right to ``width``, in [-1, 1]."""
        hgt = self._rec_height
        batch = np.zeros((len(crops), 3, hgt, width), np.float32)
        for i, c in enumerate(crops):
            cw = min(width, max(1, int(math.ceil(hgt * c.shape[1] / c.shape[0]))))
            img = resize(c[:, :, ::-1], hgt, cw)  # BGR, as the models were trained
            batch[i, :, :, :cw] = (img / 127.5 - 1.0).transpose(2, 0, 1)
        return batch

    def _upside_down(self, crops: list[np.ndarray]) -> list[int]:
        """Indices of the crops the direction classifier calls upside down."""
        cls = self._sessions["cls"]
        flagged = []
        for s in range(0, len(crops), self.batch_size):
            chunk = crops[s : s + self.batch_size]
            probs = cls.run({cls.inputs[0].name: self._normalise(chunk, 192)})[cls.outputs[0].name]
            flagged += [s + j for j, p in enumerate(probs) if int(np.argmax(p)) == 1 and p[1] > 0.9]  # label "180", PaddleOCR's bar
        return flagged

    def recognize(self, crops: Sequence) -> list[tuple[str, float]]:
        """(text, score) for each crop of a single text line, CTC greedy decoding."""
        rec = self._sessions["rec"]
        crops = [as_rgb(c, "crop") for c in crops]
        results: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        # Similar aspect ratios share a batch, so little of each batch is padding.
        order = sorted(range(len(crops)), key=lambda i: crops[i].shape[1] / crops[i].shape[0])
        hgt = self._rec_height
        for s in range(0, len(order), self.batch_size):
            idx = order[s : s + self.batch_size]
            ratio = max(320 / hgt, max(crops[i].shape[1] / crops[i].shape[0] for i in idx))
            width = int(math.ceil(hgt * ratio))
            probs = rec.run({rec.inputs[0].name: self._normalise([crops[i] for i in idx], width)})[rec.outputs[0].name]
            for i, p in zip(idx, probs):
                results[i] = self._ctc_decode(p)
        return results

    def _ctc_decode(self, probs: np.ndarray) -> tuple[str, float]:
        best = probs.argmax(axis=1)
        conf = probs.max(axis=1)
        keep = best != 0
        keep[1:] &= best[1:] != best[:-1]  # a repeated symbol is one character unless a blank separates them
        if not keep.any():
            return "", 0.0
        return "".join(self.characters[i] for i in best[keep]), float(conf[keep].mean())


def _reading_order(boxes):
    """Top to bottom; boxes whose vertical centres are within half a line height are one row, left to right."""
    boxes = sorted(boxes, key=lambda b: (b[1] + b[3]) / 2)
    rows: list[list] = []
    for b in boxes:
        cy, hgt = (b[1] + b[3]) / 2, b[3] - b[1]
        if rows:
            last = rows[-1][0]
            if abs(cy - (last[1] + last[3]) / 2) < 0.5 * min(hgt, last[3] - last[1]):
                rows[-1].append(b)
                continue
        rows.append([b])
    return [b for row in rows for b in sorted(row, key=lambda b: b[0])]
