"""Real models from wheels, with inputs made in the test and a reference run on the model's own runtime."""

from __future__ import annotations

import numpy as np

SR = 16000
VAD_WINDOW, VAD_CONTEXT = 512, 64


def speechlike_audio(seconds=1.5, seed=0):
    """Silence, then a vowel-like harmonic signal with a pitch glide and amplitude modulation, then noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    f0 = 140 + 30 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t) ** 2)
    audio = np.concatenate([np.zeros(SR // 2), 0.3 * voiced / np.abs(voiced).max(), 0.01 * rng.standard_normal(SR // 2)])
    return audio.astype(np.float32)


def vad_feed_sequence(audio):
    """Silero's streaming protocol: each 512-sample window is preceded by the previous 64 samples."""
    context = np.zeros(VAD_CONTEXT, np.float32)
    for start in range(0, len(audio) - VAD_WINDOW + 1, VAD_WINDOW):
        chunk = audio[start:start + VAD_WINDOW]
        yield np.concatenate([context, chunk])[None, :]
        context = chunk[-VAD_CONTEXT:]


def run_vad(run, audio):
    """Run a stateful VAD over ``audio`` with ``run(feeds) -> dict``; returns per-window speech probabilities."""
    state = np.zeros((2, 1, 128), np.float32)
    probs = []
    for x in vad_feed_sequence(audio):
        out = run({"input": x, "state": state, "sr": np.array(SR, np.int64)})
        probs.append(float(out["output"][0, 0]))
        state = out["stateN"]
    return np.array(probs)


def text_image(text="EDGE SDK 2026", size=(640, 160)):
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=56)
    draw.text((30, 45), text, fill="black", font=font)
    box = draw.textbbox((30, 45), text, font=font)
    return np.asarray(img), box


def ppocr_normalize(rgb):
    x = rgb.astype(np.float32) / 255.0
    x = (x - 0.5) / 0.5
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def face_image(size=128):
    """A rendered face-like pattern (skin disc, eyes, mouth) in [-1, 1] NHWC, as BlazeFace expects."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (90, 120, 160))
    d = ImageDraw.Draw(img)
    d.ellipse((30, 20, 98, 108), fill=(224, 172, 140))
    d.ellipse((45, 50, 57, 58), fill=(40, 30, 30))
    d.ellipse((71, 50, 83, 58), fill=(40, 30, 30))
    d.polygon([(64, 60), (58, 75), (70, 75)], fill=(200, 140, 120))
    d.arc((48, 72, 80, 92), 20, 160, fill=(150, 60, 60), width=3)
    x = np.asarray(img).astype(np.float32) / 127.5 - 1.0
    return x[None]


def wakeword_features(n=30, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, size=(1, 3, 40), dtype=np.int8) for _ in range(n)]


def ort_reference(path):
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return lambda feeds: dict(zip(names, sess.run(names, feeds)))


def litert_reference(path):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=path)
    it.allocate_tensors()
    ins, outs = it.get_input_details(), it.get_output_details()

    def run(feeds):
        for d in ins:
            it.set_tensor(d["index"], feeds[d["name"]])
        it.invoke()
        return {d["name"]: it.get_tensor(d["index"]) for d in outs}

    return run


def _sequence(feeds_list):
    return lambda spec_names: feeds_list


def cases():
    """name -> (hub model, reference factory, list of feeds (run in order: stateful models), atol)."""
    audio = speechlike_audio()
    img, _ = text_image()
    line = np.asarray(__import__("PIL.Image", fromlist=["Image"]).fromarray(img).resize((192, 48)))
    ww_name = "serving_default_input_audio:0"
    return {
        "silero-vad": ("silero-vad", ort_reference, None, 1e-6),
        "ppocr-det": ("ppocr-det", ort_reference, [{"x": ppocr_normalize(img)}], 1e-5),
        "ppocr-cls": ("ppocr-cls", ort_reference, [{"x": ppocr_normalize(line)}], 1e-5),
        "face-detection": ("face-detection", litert_reference, [{"input": face_image()}], 1e-5),
        "wakeword-okay-nabu": ("wakeword-okay-nabu", litert_reference, [{ww_name: f} for f in wakeword_features()], 0),
    }, audio
