"""samples/car: the cabin command assistant run as a driver would (synthesized speech), its schema
validator, slot parsing and text-level intent accuracy of the schema-constrained and ranking methods."""

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings, strategies as st

ROOT = Path(__file__).resolve().parents[1]
CAR = ROOT / "samples" / "car"
sys.path.insert(0, str(CAR))

from command_schema import SCHEMA_PATH, SchemaError, load_schema, validate  # noqa: E402
from intents import EXAMPLES, action_schema, extract_slots, generation_schema, interpret, parse_number, parse_zone  # noqa: E402

from conftest import hub_path  # noqa: E402

SCHEMA = load_schema()
JSONSCHEMA = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))  # the reference validator, beside our own


def run_sample(*args, timeout=240):
    return subprocess.run([sys.executable, str(CAR / "cabin.py"), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


# -- validator -------------------------------------------------------------------------------------


def test_valid_commands_pass():
    for cmd in (
        {"action": "set_temperature", "value": 21, "zone": "all"},
        {"action": "set_temperature", "value": 21.5, "zone": "driver"},
        {"action": "set_fan_speed", "value": 0},
        {"action": "open_window", "zone": "rear_left"},
        {"action": "set_seat_heating", "zone": "passenger", "level": 3},
        {"action": "navigate_to", "destination": "home"},
        {"action": "call_contact", "name": "Mom"},
        {"action": "play_music"},
        {"action": "play_music", "query": "jazz"},
        {"action": "unknown", "utterance": "hi", "reason": "not a cabin command"},
    ):
        assert validate(cmd, SCHEMA) == [], cmd


def test_invalid_commands_name_the_problem():
    assert validate({"action": "set_temperature", "value": 35, "zone": "all"}, SCHEMA) == ["value: 35 is above the maximum 28"]
    assert validate({"action": "set_temperature", "zone": "all"}, SCHEMA) == ["value: required"]
    assert validate({"action": "open_window", "zone": "roof"}, SCHEMA)[0].startswith('zone: "roof" is not one of')
    assert validate({"action": "set_fan_speed", "value": 2, "extra": 1}, SCHEMA) == ["extra: not allowed here"]
    assert validate({"action": "set_fan_speed", "value": True}, SCHEMA)  # a bool is not an integer in JSON
    assert validate({"action": "self_destruct"}, SCHEMA)[0].startswith('action: "self_destruct" is not one of')
    assert validate({"action": "navigate_to", "destination": ""}, SCHEMA) == ["destination: must not be empty"]
    assert validate("set_fan_speed", SCHEMA)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.integers(-1000, 15), st.integers(29, 1000), st.floats(28.0001, 1e6), st.floats(-1e6, 15.999)))
def test_temperature_out_of_range_is_rejected(value):
    assert validate({"action": "set_temperature", "value": value, "zone": "all"}, SCHEMA)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.integers().filter(lambda v: not 0 <= v <= 5), st.floats(0.01, 4.99).filter(lambda v: not v.is_integer()), st.text(), st.none(), st.booleans())
)
def test_fan_speed_must_be_an_integer_0_to_5(value):
    assert validate({"action": "set_fan_speed", "value": value}, SCHEMA)


@settings(max_examples=100, deadline=None)
@given(st.text().filter(lambda z: z not in ("driver", "passenger", "rear_left", "rear_right", "all")), st.integers(0, 3))
def test_seat_zone_outside_the_enum_is_rejected(zone, level):
    assert validate({"action": "set_seat_heating", "zone": zone, "level": level}, SCHEMA)


def test_schema_with_unsupported_keywords_is_refused(tmp_path):
    bad = tmp_path / "s.json"
    bad.write_text(json.dumps({"type": "object", "patternProperties": {}}))
    with pytest.raises(SchemaError, match="patternProperties"):
        load_schema(bad)


# -- slots -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,value",
    [
        ("twenty one degrees", 21),
        ("twenty-one", 21),
        ("set it to 19", 19),
        ("nineteen", 19),
        ("21.5 degrees", 21.5),
        ("twenty two and a half", 22.5),
        ("level zero", 0),
        ("no number", None),
    ],
)
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_parse_zone():
    windows = ("driver", "passenger", "rear_left", "rear_right", "all")
    assert parse_zone("the back left window", windows, "driver") == "rear_left"
    assert parse_zone("passenger side", windows, "driver") == "passenger"
    assert parse_zone("all windows", windows, "driver") == "all"
    assert parse_zone("my window", windows, "all") == "driver"
    assert parse_zone("rear left", ("driver", "passenger", "all"), "all") == "all"  # not a temperature zone


def test_extract_slots():
    assert extract_slots("set_temperature", "Make it 19 degrees on the passenger side.") == {"value": 19, "zone": "passenger"}
    assert extract_slots("set_fan_speed", "Switch the blower off.") == {"value": 0}
    assert extract_slots("close_window", "Close the windows.") == {"zone": "all"}
    assert extract_slots("navigate_to", "Navigate to the nearest gas station, please.") == {"destination": "the nearest gas station"}
    assert extract_slots("call_contact", "Call John Smith.") == {"name": "John Smith"}
    assert extract_slots("play_music", "Play music.") == {}
    assert extract_slots("set_temperature", "Make it warmer.") == {"zone": "all"}  # no value: the schema asks for one


def test_generation_schemas_keep_the_commands_language():
    assert action_schema(SCHEMA)["properties"]["action"]["enum"] == [b["properties"]["action"]["const"] for b in SCHEMA["oneOf"]]
    gen = jsonschema.Draft202012Validator(generation_schema(SCHEMA))
    for _, command in EXAMPLES:
        assert gen.is_valid(command), command
        assert command["action"] == "unknown" or JSONSCHEMA.is_valid(command), command
    # Out of range is still writable (then refused by the validator with the reason), not forced into range.
    assert gen.is_valid({"action": "set_temperature", "value": 40, "zone": "all"})
    assert not gen.is_valid({"action": "set_temperature", "value": 21, "zone": "roof"})


# -- the LLM: text-level accuracy ------------------------------------------------------------------


@pytest.fixture(scope="module")
def session():
    from edgesdk import Session, SessionOptions

    with Session(hub_path("smollm2-135m"), SessionOptions.for_device("car")) as s:
        yield s


@pytest.fixture(scope="module")
def classifier(session):
    from intents import SchemaClassifier

    c = SchemaClassifier(session)
    c.warmup()
    return c


def test_the_command_schema_file_itself_constrains_generation(session):
    # oneOf with a discriminator, as written: the engine compiles it and what it writes validates.
    chat = [{"role": "user", "content": "Give the JSON command to set the fan speed to three."}]
    JSONSCHEMA.validate(json.loads(session.generate(chat, response_format=json.loads(SCHEMA_PATH.read_text()), max_tokens=96)))


def test_intent_accuracy_on_the_phrasing_set(classifier):
    from eval_intents import evaluate, load_cases

    result = evaluate(classifier, load_cases("all"))
    for command in result["commands"]:
        JSONSCHEMA.validate(command)
    # Measured 33 of 39 (85 %: 19/21 dev, 14/18 held out; another run 32). >= 78 % allows two flips
    # below 33 from numeric differences between kernel builds, not a regression.
    assert result["command_accuracy"] >= 0.78, result["misses"]


def test_ranking_method_is_still_available(session):
    from eval_intents import evaluate, load_cases
    from intents import IntentClassifier

    cases = load_cases("dev")[::4]  # 6 of 21: ranking costs nine prefills per utterance
    result = evaluate(IntentClassifier(session), cases)
    for command in result["commands"]:
        JSONSCHEMA.validate(command)
    assert result["command_accuracy"] >= 5 / 6, result["misses"]  # measured 6 of 6 (19/21 on all of dev)


def test_out_of_range_and_unfillable_commands_become_clarifications(classifier):
    too_hot = interpret("Set the temperature to forty degrees.", classifier)
    assert too_hot.command["action"] == "unknown" and "above the maximum 28" in too_hot.command["reason"]
    for text in ("", "   ", "Set the temperature to forty degrees.", "Call."):
        cmd = interpret(text, classifier).command
        assert validate(cmd, SCHEMA) == [], cmd
        JSONSCHEMA.validate(cmd)


# -- the app ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def commands_wav(tmp_path_factory):
    pytest.importorskip("piper")
    pytest.importorskip("pymicro_features")
    pytest.importorskip("edgesdk_ctranslate2", reason="pip install plugins/edgesdk-ctranslate2")
    from edgesdk.audio import Audio, TextToSpeech, write_wav

    hub_path("piper-joe-us")
    tts = TextToSpeech(noise_scale=0, noise_w=0)
    pause = Audio.silence(0.4, 22050)
    speech = (
        Audio.silence(0.5)
        + tts.synthesize("Okay nabu.")
        + pause
        + tts.synthesize("Set the temperature to twenty one degrees.")
        + Audio.silence(1.2, 22050)
        + tts.synthesize("Okay nabu.")
        + pause
        + tts.synthesize("Set the fan speed to two.")
        + Audio.silence(1.2, 22050)
    )
    path = tmp_path_factory.mktemp("car") / "commands.wav"
    write_wav(path, speech)
    return path


def test_cabin_turns_speech_into_valid_commands(commands_wav, tmp_path):
    out = tmp_path / "commands.json"
    r = run_sample(commands_wav, "--json-out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    commands = json.loads(out.read_text())
    assert [(c["action"], c.get("value")) for c in commands] == [("set_temperature", 21), ("set_fan_speed", 2)]
    assert all(validate(c, SCHEMA) == [] and JSONSCHEMA.is_valid(c) for c in commands)
    printed = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert printed == commands
    assert r.stdout.count("[latency] turn") == 2  # met or not, every command's latency is reported
    for stage in ("wake", "vad", "asr", "intent"):
        assert any(line.startswith(stage + " ") for line in r.stdout.splitlines()), f"no report row for {stage}"
    assert "of 4096 MiB budget" in r.stdout  # the car device class's memory budget governs the pipeline


def test_cabin_bad_input_fails_before_loading_models(tmp_path):
    missing = run_sample(tmp_path / "nope.wav")
    assert missing.returncode != 0 and "error:" in missing.stderr and "no such WAV file" in missing.stderr
    not_wav = tmp_path / "x.wav"
    not_wav.write_text(json.dumps({"not": "audio"}))
    r = run_sample(not_wav, "--json-out", tmp_path / "c.json")
    assert r.returncode != 0 and "not a PCM WAV file" in r.stderr
    assert "loading models" not in r.stderr and not (tmp_path / "c.json").exists()
