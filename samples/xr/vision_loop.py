"""XR vision loop: face detection on a camera stream at a target frame rate, against a latency budget.

    python samples/xr/vision_loop.py [--fps 30] [--seconds 5] [--budget-ms 33] [--model hub:face-detection] [--json out.json]

The "camera" is synthetic: a real face photo (Grace Hopper, from matplotlib's sample data) moves
and changes size over changing backgrounds, and one second in four has no face. Frames arrive on the
camera's clock; when detection falls behind, the loop takes the newest frame and counts the ones it
skipped as dropped, as a headset's tracking loop would. BlazeFace runs through ``edgesdk.Session``
(``edgesdk.vision.FaceDetector``) with the ``xr`` device-class preset (NPU, then DSP, CPU, GPU).
Latency budgets are reported, never enforced.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from edgesdk import SessionOptions
from edgesdk.errors import EdgeSDKError, MissingDependencyError
from edgesdk.vision import FaceDetector, load_image, resize

# The photo is 512x600; the head (with the cap) is cropped, the face is hand-labelled in photo pixels.
HEAD_CROP = (110, 20, 420, 400)  # x0, y0, x1, y1
FACE_BOX = (165, 150, 365, 340)  # brows to chin, cheek to cheek: what BlazeFace boxes
NO_FACE_EVERY = 4  # one second in four has no face in view


def face_photo() -> np.ndarray:
    """Grace Hopper's portrait, from the installed matplotlib's sample data (matplotlib is not imported)."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("the XR sample's face photo", "matplotlib", "it ships grace_hopper.jpg")
    return load_image(Path(spec.submodule_search_locations[0]) / "mpl-data" / "sample_data" / "grace_hopper.jpg")


class Camera:
    """Synthetic frames with known face positions: ``frame(i)`` -> (uint8 image, face box or None)."""

    def __init__(self, width: int = 640, height: int = 480, fps: float = 30.0, seed: int = 0):
        self.width, self.height, self.fps = width, height, fps
        # The scene repeats every NO_FACE_EVERY seconds, so a run pre-renders at most one cycle.
        self.cycle = max(1, int(round(NO_FACE_EVERY * fps)))
        x0, y0, x1, y1 = HEAD_CROP
        self.head = face_photo()[y0:y1, x0:x1]
        rng = np.random.default_rng(seed)
        # A room: a shaded wall, a floor, and furniture, windows and posters as coloured boxes.
        self._wall = np.linspace([150, 160, 175], [95, 100, 115], height).astype(np.float32)[:, None, :]
        self._things = [
            (
                int(rng.integers(-width // 2, width * 3 // 2)),
                int(rng.integers(0, height * 3 // 4)),
                int(rng.integers(30, 220)),
                int(rng.integers(30, 200)),
                rng.integers(20, 236, 3).astype(np.float32),
            )
            for _ in range(12)
        ]
        self._noise = rng.normal(0, 6, (height, width, 3)).astype(np.float32)

    def has_face(self, i: int) -> bool:
        return int((i % self.cycle) / self.fps) % NO_FACE_EVERY != NO_FACE_EVERY - 1

    def background(self, i: int) -> np.ndarray:
        t = (i % self.cycle) / self.fps
        img = np.repeat(self._wall, self.width, axis=1)
        img[self.height * 4 // 5 :] = (90, 70, 55)
        pan = int(60 * math.sin(0.5 * t))  # the wearer's head turns: the room slides sideways
        for x, y, w, h, colour in self._things:
            x0, x1 = max(0, x + pan), min(self.width, x + pan + w)
            if x0 < x1:
                img[y : y + h, x0:x1] = colour
                img[y : y + h, x0:x1:9] *= 0.8  # stripes: edges and texture, as real scenes have
        img += np.roll(self._noise, (37 * i) % self.height, axis=0)
        return np.clip(img, 0, 255).astype(np.uint8)

    def frame(self, i: int) -> tuple[np.ndarray, tuple[float, float, float, float] | None]:
        img = self.background(i)
        if not self.has_face(i):
            return img, None
        t = (i % self.cycle) / self.fps
        scale = 0.75 + 0.2 * math.sin(0.9 * t)  # the head is 210-360 pixels tall: arm's length to ~1.5 m
        hh, hw = round(self.head.shape[0] * scale), round(self.head.shape[1] * scale)
        # A Lissajous path over the frame, kept fully in view.
        x = round((self.width - hw) * (0.5 + 0.5 * math.sin(1.3 * t)))
        y = round((self.height - hh) * (0.5 + 0.5 * math.sin(1.7 * t + 1.0)))
        img[y : y + hh, x : x + hw] = np.clip(resize(self.head, hh, hw), 0, 255).astype(np.uint8)
        fx0, fy0, fx1, fy1 = FACE_BOX
        hx0, hy0 = HEAD_CROP[:2]
        box = (x + (fx0 - hx0) * scale, y + (fy0 - hy0) * scale, x + (fx1 - hx0) * scale, y + (fy1 - hy0) * scale)
        return img, box


def run_loop(detector: FaceDetector, camera: Camera, seconds: float, budget_s: float) -> dict:
    """Process frames on the camera's clock; returns the report (see the module docstring)."""
    total = max(1, int(round(seconds * camera.fps)))
    # Frames are rendered before the clock starts: rendering is the camera's work, not the loop's.
    shots = [camera.frame(i) for i in range(min(total, camera.cycle))]
    latencies, dropped, hits, misses, false_pos, empty_frames = [], 0, 0, 0, 0, 0
    next_i = 0
    t0 = time.perf_counter()
    while next_i < total:
        newest = int((time.perf_counter() - t0) * camera.fps)
        if newest < next_i:
            time.sleep(max(0.0, t0 + next_i / camera.fps - time.perf_counter()))
            continue
        newest = min(newest, total - 1)
        dropped += newest - next_i  # frames that arrived while the last one was being processed
        image, truth = shots[newest % len(shots)]
        start = time.perf_counter()
        faces = detector.detect(image)
        latencies.append(time.perf_counter() - start)
        if truth is None:
            empty_frames += 1
            false_pos += bool(faces)
        elif faces and max(f.iou(truth) for f in faces) >= 0.5:
            hits += 1
        else:
            misses += 1
        next_i = newest + 1
    wall = time.perf_counter() - t0
    lat = np.array(latencies)
    over = int((lat > budget_s).sum())
    placement = detector.session.placement
    return {
        "frames": total,
        "processed": len(lat),
        "dropped": dropped,
        "wall_s": wall,
        "fps_target": camera.fps,
        "fps_processed": len(lat) / wall if wall > 0 else None,
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p90_ms": float(np.percentile(lat, 90) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
        "max_ms": float(lat.max() * 1e3),
        "budget_ms": budget_s * 1e3,
        "over_budget": over,
        "over_budget_pct": 100.0 * over / len(lat),
        "faces_found": hits,
        "faces_missed": misses,
        "empty_frames": empty_frames,
        "false_positive_frames": false_pos,
        "placement": f"{placement.device.id} [{placement.device.kind}] {placement.device.name}",
        "model": Path(detector.session.model.path).name,
    }


def format_report(r: dict) -> str:
    with_face = r["faces_found"] + r["faces_missed"]
    return "\n".join(
        [
            f"model      {r['model']} on {r['placement']}",
            f"frames     {r['processed']} processed, {r['dropped']} dropped of {r['frames']} at {r['fps_target']:g} fps "
            f"({r['fps_processed']:.1f} fps processed over {r['wall_s']:.2f} s)",
            f"latency    p50 {r['p50_ms']:.1f} ms, p90 {r['p90_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms",
            f"budget     {r['budget_ms']:g} ms: {r['over_budget']} frames over ({r['over_budget_pct']:.1f} %)",
            f"accuracy   face found in place (IoU >= 0.5) in {r['faces_found']}/{with_face} frames with a face; "
            f"a face reported in {r['false_positive_frames']}/{r['empty_frames']} frames without one",
        ]
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--budget-ms", type=float, default=33.0)
    ap.add_argument("--model", default="hub:face-detection", help="a BlazeFace TFLite model (hub:face-detection-full for far faces)")
    ap.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    args = ap.parse_args(argv)
    if args.fps <= 0 or args.seconds <= 0 or args.budget_ms <= 0:
        ap.error("--fps, --seconds and --budget-ms must be positive")
    try:
        camera = Camera(fps=args.fps)
        detector = FaceDetector(args.model, SessionOptions.for_device("xr"))
    except EdgeSDKError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with detector:
        detector.detect(camera.frame(0)[0])  # first run allocates: keep it out of the frame latencies
        report = run_loop(detector, camera, args.seconds, args.budget_ms / 1e3)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
