"""Pictures for the landmark models' tests (tests/test_real_models.py): a real face photo, and a hand and a
standing person drawn the way the models' crops frame them. Each returns uint8 RGB (H, W, 3) and what
was drawn where, so a test can check the model's answer against the picture."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SKIN, SKIN_DARK = (222, 170, 138), (176, 120, 96)
SS = 4  # supersampling: drawn at 4x and scaled down, so edges are smooth as a camera's are


def face_photo() -> np.ndarray:
    """Grace Hopper's portrait (512x600), from matplotlib's sample data (matplotlib is not imported)."""
    from PIL import Image

    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        import pytest

        pytest.skip("the face photo ships in matplotlib's sample data (the test extra)")
    path = Path(spec.submodule_search_locations[0]) / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    return np.asarray(Image.open(path).convert("RGB"))


def crop_square(rgb: np.ndarray, cx: float, cy: float, side: float, size: int) -> np.ndarray:
    """The axis-aligned square of ``side`` pixels centred on (cx, cy), edges replicated where it leaves the
    image (MediaPipe's BORDER_REPLICATE), resized to ``size`` x ``size``; uint8 RGB."""
    from PIL import Image

    x0, y0 = cx - side / 2, cy - side / 2
    pad = int(side) + 2
    padded = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    box = (x0 + pad, y0 + pad, x0 + pad + side, y0 + pad + side)
    return np.asarray(Image.fromarray(padded).resize((size, size), Image.BILINEAR, box=box))


def _canvas(size, top, bottom):
    from PIL import Image, ImageDraw

    n = size * SS
    wall = np.linspace(top, bottom, n).astype(np.uint8)[:, None, :].repeat(n, axis=1)
    img = Image.fromarray(np.ascontiguousarray(wall))
    return img, ImageDraw.Draw(img)


def _capsule(d, p, q, width, fill):
    """A limb: a thick line with round ends, in final-image pixels (scaled by SS here)."""
    (x0, y0), (x1, y1) = p, q
    w = width * SS
    d.line((x0 * SS, y0 * SS, x1 * SS, y1 * SS), fill=fill, width=int(w))
    for x, y in (p, q):
        d.ellipse((x * SS - w / 2, y * SS - w / 2, x * SS + w / 2, y * SS + w / 2), fill=fill)


def _finish(img, size):
    from PIL import Image, ImageFilter

    return np.asarray(img.resize((size, size), Image.LANCZOS).filter(ImageFilter.GaussianBlur(0.6)))


# Base (where it leaves the palm: the MCP knuckle; the thumb's, between its CMC and MCP) and tip of each finger of
# hand_crop(), thumb first, in 224-pixel crop coordinates.
HAND_FINGERS = {
    "thumb": ((86, 150), (48, 104)),
    "index": ((96, 110), (90, 36)),
    "middle": ((114, 106), (116, 26)),
    "ring": ((131, 110), (141, 36)),
    "pinky": ((146, 118), (164, 58)),
}
HAND_WRIST = (121, 180)  # the middle of the palm's lower edge, where the forearm starts


def hand_crop(size=224):
    """An open left hand seen from the palm side, fingers up and slightly spread, thumb out to the image's
    left, the forearm leaving at the bottom: framed as MediaPipe's hand crop frames a hand (palm centre
    a little below the middle, fingertips near the top)."""
    img, d = _canvas(size, (196, 190, 184), (150, 146, 142))
    scale = size / 224
    pts = lambda *ps: [(x * scale, y * scale) for x, y in ps]
    for edge, fill in ((3, SKIN_DARK), (0, SKIN)):  # an outline a shade darker, then the skin
        _capsule(d, *pts((118, 178), (122, 240)), 44 + edge, fill)  # forearm
        palm = pts((86, 112), (150, 112), (158, 150), (146, 182), (96, 184), (80, 152))
        d.polygon([(x * SS, y * SS) for x, y in palm], fill=fill, outline=fill, width=int(edge * SS) or 1)
        for name, (base, tip) in HAND_FINGERS.items():
            _capsule(d, *pts(base, tip), (22 if name == "thumb" else 17 if name != "pinky" else 14) * scale + edge, fill)
    for name, (base, tip) in HAND_FINGERS.items():  # creases at the finger joints, nails are on the back
        for t in (0.42, 0.7) if name == "thumb" else (0.38, 0.68):
            x, y = base[0] + t * (tip[0] - base[0]), base[1] + t * (tip[1] - base[1])
            dx, dy = tip[1] - base[1], -(tip[0] - base[0])
            n = 6 / max(np.hypot(dx, dy), 1e-6)
            d.line(((x - dx * n) * scale * SS, (y - dy * n) * scale * SS, (x + dx * n) * scale * SS, (y + dy * n) * scale * SS), fill=SKIN_DARK, width=SS)
    d.arc((96 * scale * SS, 120 * scale * SS, 150 * scale * SS, 176 * scale * SS), 100, 200, fill=SKIN_DARK, width=SS)  # life line
    return _finish(img, size)


def person_standing(size=256, raise_arm="right"):
    """A person standing facing the camera, the whole body in view, hips at the middle of the square:
    how MediaPipe's pose crop frames a person. One arm (the subject's ``raise_arm``) is raised above the
    head, the other hangs; the subject's right side is on the image's left. Returns the image, the drawn
    joints (subject's sides) in pixels, and the person's silhouette (a boolean mask)."""
    img, d = _canvas(size, (178, 186, 196), (120, 124, 132))
    backdrop, bd = _canvas(size, (178, 186, 196), (120, 124, 132))
    k = size / 256
    for draw in (d, bd):
        draw.rectangle((0, int(0.9 * size * SS), size * SS, size * SS), fill=(110, 96, 84))  # floor
    J = {
        "nose": (128, 40),
        "neck": (128, 64),
        "right_shoulder": (110, 70),
        "left_shoulder": (146, 70),
        "right_hip": (117, 128),
        "left_hip": (139, 128),
        "right_knee": (115, 172),
        "left_knee": (141, 172),
        "right_ankle": (114, 216),
        "left_ankle": (142, 216),
    }
    if raise_arm == "right":
        J |= {"right_elbow": (92, 46), "right_wrist": (88, 18), "left_elbow": (158, 100), "left_wrist": (162, 130)}
    else:
        J |= {"left_elbow": (164, 46), "left_wrist": (168, 18), "right_elbow": (98, 100), "right_wrist": (94, 130)}
    J = {n: (x * k, y * k) for n, (x, y) in J.items()}
    shirt, trousers, shoe, hair = (180, 50, 50), (40, 50, 90), (30, 25, 25), (60, 40, 30)
    for side in ("right", "left"):  # legs
        _capsule(d, J[f"{side}_hip"], J[f"{side}_knee"], 16 * k, trousers)
        _capsule(d, J[f"{side}_knee"], J[f"{side}_ankle"], 14 * k, trousers)
        ax, ay = J[f"{side}_ankle"]
        toe = ax + (-9 if side == "right" else 9) * k
        _capsule(d, (ax, ay + 3 * k), (toe, ay + 5 * k), 9 * k, shoe)
    torso = [J["right_shoulder"], J["left_shoulder"], (J["left_hip"][0] + 3 * k, J["left_hip"][1]), (J["right_hip"][0] - 3 * k, J["right_hip"][1])]
    d.polygon([(x * SS, y * SS) for x, y in torso], fill=shirt)
    d.rectangle(
        ((J["right_hip"][0] - 3 * k) * SS, (J["right_hip"][1] - 6 * k) * SS, (J["left_hip"][0] + 3 * k) * SS, (J["left_hip"][1] + 4 * k) * SS), fill=trousers
    )
    _capsule(d, J["neck"], (J["neck"][0], J["neck"][1] + 6 * k), 10 * k, SKIN)
    for side in ("right", "left"):  # arms: sleeve, then bare forearm and hand
        _capsule(d, J[f"{side}_shoulder"], J[f"{side}_elbow"], 11 * k, shirt)
        _capsule(d, J[f"{side}_elbow"], J[f"{side}_wrist"], 9 * k, SKIN)
        wx, wy = J[f"{side}_wrist"]
        ex, ey = J[f"{side}_elbow"]
        hx, hy = wx + 0.25 * (wx - ex), wy + 0.25 * (wy - ey)
        _capsule(d, (wx, wy), (hx, hy), 10 * k, SKIN)
    nx, ny = J["nose"]
    s = SS
    d.ellipse(((nx - 14 * k) * s, (ny - 22 * k) * s, (nx + 14 * k) * s, (ny + 16 * k) * s), fill=hair)  # hair behind
    d.ellipse(((nx - 12 * k) * s, (ny - 17 * k) * s, (nx + 12 * k) * s, (ny + 15 * k) * s), fill=SKIN)  # face
    d.chord(((nx - 13 * k) * s, (ny - 23 * k) * s, (nx + 13 * k) * s, (ny - 4 * k) * s), 180, 360, fill=hair)  # fringe
    for ex in (-5, 5):
        d.ellipse(((nx + ex * k - 2.2 * k) * s, (ny - 6 * k) * s, (nx + ex * k + 2.2 * k) * s, (ny - 3 * k) * s), fill=(255, 255, 255))
        d.ellipse(((nx + ex * k - 1.2 * k) * s, (ny - 5.8 * k) * s, (nx + ex * k + 1.2 * k) * s, (ny - 3.2 * k) * s), fill=(40, 30, 30))
    d.polygon([(nx * s, (ny - 3 * k) * s), ((nx - 2 * k) * s, (ny + 2 * k) * s), ((nx + 2 * k) * s, (ny + 2 * k) * s)], fill=SKIN_DARK)
    d.arc(((nx - 5 * k) * s, (ny + 2 * k) * s, (nx + 5 * k) * s, (ny + 9 * k) * s), 20, 160, fill=(150, 60, 60), width=max(1, int(1.5 * k * s)))
    rgb = _finish(img, size)
    return rgb, J, np.abs(rgb.astype(np.int32) - _finish(backdrop, size)).max(-1) > 24
