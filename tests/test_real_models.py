"""Real models do what they are for, through Session, on inputs made in the test."""

import numpy as np

import edgesdk

from conftest import hub_path
from model_cases import SR, VAD_WINDOW, face_image, ppocr_normalize, run_vad, speechlike_audio, text_image, wakeword_features


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
