"""samples/phone: the offline voice assistant run as a user would, on synthesized speech."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("piper")
pytest.importorskip("pymicro_features")
pytest.importorskip("edgesdk_ctranslate2", reason="pip install plugins/edgesdk-ctranslate2")
from edgesdk.audio import Audio, SpeechRecognizer, TextToSpeech, read_wav, word_error_rate, write_wav  # noqa: E402

from conftest import hub_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "phone" / "assistant.py"


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory):
    hub_path("piper-joe-us")
    tts = TextToSpeech(noise_scale=0, noise_w=0)
    speech = (Audio.silence(0.5) + tts.synthesize("Okay nabu.") + Audio.silence(0.4, 22050)
              + tts.synthesize("What is the capital of France?") + Audio.silence(1.2, 22050))
    path = tmp_path_factory.mktemp("phone") / "question.wav"
    write_wav(path, speech)
    return path


def run_sample(*args, timeout=240):
    return subprocess.run([sys.executable, str(SAMPLE), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_phone_assistant_answers_out_loud(question_wav, tmp_path):
    out = tmp_path / "answer.wav"
    r = run_sample(question_wav, "--out", out, "--max-tokens", "24")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[wake word] Okay Nabu" in r.stdout
    heard = next(line for line in r.stdout.splitlines() if line.startswith("[you] "))
    assert word_error_rate("what is the capital of france", heard[len("[you] "):]) <= 0.2
    answer = next(line for line in r.stdout.splitlines() if line.startswith("[assistant] "))[len("[assistant] "):]
    for stage in ("wake", "vad", "asr", "llm", "tts"):
        assert any(line.startswith(stage + " ") for line in r.stdout.splitlines()), f"no report row for {stage}"
    assert "of 1536 MiB budget" in r.stdout  # the phone device class's memory budget governs the pipeline
    spoken = read_wav(out)
    assert spoken.duration > 0.5
    text = SpeechRecognizer(hub_path("whisper-tiny-en")).transcribe(spoken).text
    assert word_error_rate(answer, text) <= 0.5


def test_phone_assistant_escalates_to_the_cloud_when_unsure(question_wav, tmp_path, llama_server):
    r = run_sample(question_wav, "--out", tmp_path / "a.wav", "--cloud", llama_server, "--cloud-model", "smollm2",
                   "--min-confidence", "0.999", "--max-tokens", "24")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[route] cloud" in r.stdout
    assert (tmp_path / "a.wav").exists()


def test_phone_assistant_bad_input_fails_clearly(tmp_path):
    missing = run_sample(tmp_path / "nope.wav")
    assert missing.returncode != 0 and "no such WAV file" in missing.stderr
    not_wav = tmp_path / "x.wav"
    not_wav.write_text(json.dumps({"not": "audio"}))
    r = run_sample(not_wav)
    assert r.returncode != 0 and "not a PCM WAV file" in r.stderr
