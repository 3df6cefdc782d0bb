"""Face detection with MediaPipe's BlazeFace TFLite models: SSD anchors, box decoding and weighted NMS in numpy.

The model runs through :class:`edgesdk.Session`; the image is letterboxed (padded to a square, so
faces keep their shape), scaled to the model's input and normalised to [-1, 1], as MediaPipe does.
"""

from __future__ import annotations

import logging

import attrs
import numpy as np

from .._errors import UnsupportedModelError
from .._options import SessionOptions
from .._block import SessionBlock
from ._image import as_rgb, resize

__all__ = ["FaceDetector", "Face"]

log = logging.getLogger("edgesdk.vision")

# (input size, anchor count) -> [(stride, anchors per feature-map cell)], from MediaPipe's
# SsdAnchorsCalculator options for each BlazeFace variant (layers sharing a stride are merged).
_ANCHOR_LAYOUTS = {
    (128, 896): [(8, 2), (16, 6)],  # front / short range
    (256, 896): [(16, 2), (32, 6)],  # back camera
    (192, 2304): [(4, 1)],  # full range
}

KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion")


@attrs.frozen
class Face:
    """A detected face: ``box`` (x0, y0, x1, y1) in image pixels, ``score`` 0..1, and ``keypoints``,
    six (x, y) pixel positions named by :data:`KEYPOINT_NAMES` (eyes from the subject's point of view)."""

    box: tuple[float, float, float, float]
    score: float
    keypoints: tuple[tuple[float, float], ...]

    def iou(self, box) -> float:
        """Intersection over union of this face's box with ``box`` (x0, y0, x1, y1)."""
        return float(_iou(np.asarray(self.box, np.float64), np.asarray([box], np.float64))[0])


def _anchors(size: int, count: int) -> np.ndarray:
    layout = _ANCHOR_LAYOUTS.get((size, count))
    if layout is None:
        raise KeyError((size, count))
    centers = []
    for stride, per_cell in layout:
        n = -(-size // stride)
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        cells = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centers.append(np.repeat(cells, per_cell, axis=0))  # MediaPipe order: row, column, then anchor
    return np.concatenate(centers).astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, points: np.ndarray, iou_threshold: float):
    """MediaPipe's weighted non-maximum suppression: each kept face is the score-weighted mean of
    the boxes and keypoints overlapping the best remaining one, with that one's score. BlazeFace
    fires on many neighbouring anchors per face; averaging them steadies the box from frame to frame."""
    order = np.argsort(-scores, kind="stable")
    kept = []
    while len(order):
        ious = _iou(boxes[order[0]], boxes[order])
        group = order[ious > iou_threshold]
        w = scores[group][:, None]
        kept.append(((boxes[group] * w).sum(0) / w.sum(), float(scores[order[0]]), (points[group] * w[:, :, None]).sum(0) / w.sum()))
        order = order[ious <= iou_threshold]
    return kept


class FaceDetector(SessionBlock):
    """Finds faces with BlazeFace (``hub:face-detection``, short range: faces within ~2 m of the
    camera; ``hub:face-detection-full`` for faces up to ~5 m).

    ``detect(image)`` returns :class:`Face` objects, best first. ``min_score`` is the detection
    threshold, ``iou_threshold`` the overlap above which two detections are one face.
    """

    def __init__(self, model: str = "hub:face-detection", options: SessionOptions | None = None, *, min_score: float = 0.5, iou_threshold: float = 0.3):
        from .._session import Session

        if not 0 <= min_score <= 1 or not 0 < iou_threshold <= 1:
            raise ValueError(f"min_score must be in [0, 1] and iou_threshold in (0, 1], got {min_score!r}, {iou_threshold!r}")
        self.min_score, self.iou_threshold = min_score, iou_threshold
        self.session = Session(model, options or SessionOptions())
        try:
            self._input = self.session.inputs[0]
            shape = self._input.shape
            outs = {o.name: o for o in self.session.outputs}
            reg = next((o for o in self.session.outputs if isinstance(o.shape[-1], int) and o.shape[-1] == 16), None)
            cls = next((o for o in self.session.outputs if isinstance(o.shape[-1], int) and o.shape[-1] == 1), None)
            if len(shape) != 4 or shape[1] != shape[2] or not isinstance(shape[1], int) or reg is None or cls is None or len(outs) != 2:
                raise UnsupportedModelError(
                    self.session.model.path, f"is not a BlazeFace model (input {shape}, outputs {[(o.name, o.shape) for o in self.session.outputs]})"
                )
            self.size = int(shape[1])
            self._reg, self._cls = reg.name, cls.name
            try:
                self._anchors = _anchors(self.size, int(reg.shape[1]))
            except KeyError:
                raise UnsupportedModelError(
                    self.session.model.path, f"BlazeFace layout with input {self.size} and {reg.shape[1]} anchors is not known"
                ) from None
        except BaseException:
            self.session.close()
            raise

    @property
    def sessions(self) -> dict:
        return {"faces": self.session}

    def detect(self, image) -> list[Face]:
        """Faces in ``image`` (uint8 RGB array, path or Pillow image), best first."""
        rgb = as_rgb(image)
        h, w = rgb.shape[:2]
        side = max(h, w)
        top, left = (side - h) // 2, (side - w) // 2
        scale = self.size / side
        x = np.zeros((self.size, self.size, 3), np.float32)
        # Letterbox: the padding is black in [-1, 1] (-1), like MediaPipe's border mode.
        ph, pw = max(1, round(h * scale)), max(1, round(w * scale))
        oy, ox = round(top * scale), round(left * scale)
        x[:] = -1.0
        x[oy : oy + ph, ox : ox + pw] = resize(rgb, ph, pw) / 127.5 - 1.0
        out = self.session.run({self._input.name: x[None]})
        raw = out[self._reg][0]
        logits = np.clip(out[self._cls][0, :, 0].astype(np.float64), -100, 100)
        scores = 1 / (1 + np.exp(-logits))
        keep = scores >= self.min_score
        if not keep.any():
            return []
        raw, scores, anchors = raw[keep], scores[keep], self._anchors[keep]
        s = float(self.size)
        cx, cy = raw[:, 0] / s + anchors[:, 0], raw[:, 1] / s + anchors[:, 1]
        bw, bh = raw[:, 2] / s, raw[:, 3] / s
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        points = raw[:, 4:16].reshape(-1, 6, 2) / s + anchors[:, None, :]
        faces = []
        # Model coordinates (0..1 of the letterboxed square) back to image pixels.
        offset = np.array([ox, oy], np.float64) / self.size
        to_px = self.size * np.array([w / pw, h / ph])
        for box, score, pts in weighted_nms(boxes.astype(np.float64), scores.astype(np.float64), points.astype(np.float64), self.iou_threshold):
            b = ((box.reshape(2, 2) - offset) * to_px).ravel()
            p = (pts - offset) * to_px
            faces.append(Face(tuple(float(v) for v in b), score, tuple((float(a), float(c)) for a, c in p)))
        return faces
