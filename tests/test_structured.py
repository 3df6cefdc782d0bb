"""Constrained generation (JSON schema, regex, Lark/GBNF grammars) and tool calls: the output always
validates, incomplete output is an error, and the token mask agrees with a brute-force reference."""

from __future__ import annotations

import json
import re

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgesdk
from edgesdk.errors import GenerationError, StructuredOutputError
from edgesdk.llm import LLM, ToolCall
from edgesdk.llm._constrain import Constraint, grammar_for
from edgesdk.llm._config import GenerationConfig
from edgesdk.llm._tools import ToolSet

from conftest import smollm2_path

CAT = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 30},
        "color": {"enum": ["black", "white", "tabby"]},
        "toys": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    },
    "required": ["name", "age", "color"],
    "additionalProperties": False,
}
CHAT = [{"role": "user", "content": "Describe a cat as JSON with its name, age, color and toys."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}}, "required": ["city"]},
    },
}
BOOK = {
    "type": "function",
    "function": {
        "name": "book_flight",
        "description": "Book a flight",
        "parameters": {
            "type": "object",
            "properties": {"origin": {"type": "string"}, "destination": {"type": "string"}, "day": {"type": "string"}},
            "required": ["origin", "destination", "day"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def smol():
    with edgesdk.Session(smollm2_path()) as s:
        yield s


def _schema_of(fmt):
    return fmt["json_schema"]["schema"]


# --- real model --------------------------------------------------------------------------------


@pytest.mark.parametrize("sampling", [dict(), dict(temperature=1.0, top_p=0.95, seed=3)], ids=["greedy", "sampled"])
def test_json_schema_output_validates(smol, sampling):
    fmt = {"type": "json_schema", "json_schema": {"name": "cat", "schema": CAT}}
    reply = smol.generate(CHAT, response_format=fmt, max_tokens=120, **sampling)
    jsonschema.validate(json.loads(reply), CAT)
    assert reply.stop_reason == "eos" and reply.stats.generated_tokens <= 120


def test_json_object_and_bare_schema(smol):
    city = [{"role": "user", "content": "Give a JSON object with a city name and its country."}]
    assert isinstance(json.loads(smol.generate(city, response_format={"type": "json_object"}, max_tokens=120)), dict)
    jsonschema.validate(json.loads(smol.generate(CHAT, response_format=CAT, max_tokens=120)), CAT)


def test_streaming_gives_the_reply(smol):
    stream = smol.generate_stream(CHAT, response_format=CAT, max_tokens=120)
    pieces = list(stream)
    assert len(pieces) > 3 and "".join(pieces) == stream.reply
    jsonschema.validate(json.loads(stream.reply), CAT)
    assert stream.stats is stream.reply.stats and stream.stats.stop_reason == "eos"


def test_speculation_keeps_greedy_output_and_validity(smol):
    plain = smol.generate(CHAT, response_format=CAT, max_tokens=120)
    looked = smol.generate(CHAT, response_format=CAT, max_tokens=120, speculative="prompt_lookup")
    assert looked == plain
    with edgesdk.Session(smollm2_path()) as draft:
        drafted = smol.generate(CHAT, response_format=CAT, max_tokens=120, draft=draft)
        assert drafted == plain
        sampled = smol.generate(CHAT, response_format=CAT, max_tokens=120, draft=draft, temperature=0.9, seed=5)
        jsonschema.validate(json.loads(sampled), CAT)
    assert smol.runner.last_stats.drafted_tokens > 0


def test_max_tokens_before_the_grammar_closes_is_an_error(smol):
    with pytest.raises(StructuredOutputError, match="max_tokens") as exc:
        smol.generate(CHAT, response_format=CAT, max_tokens=4)
    assert exc.value.partial.startswith("{") and smol.runner.last_stats.stop_reason == "max_tokens"
    stream = smol.generate_stream(CHAT, response_format=CAT, max_tokens=4)
    pieces = []
    with pytest.raises(StructuredOutputError):
        for p in stream:
            pieces.append(p)
    assert "".join(pieces) == exc.value.partial and stream.reply is None


def test_a_stop_string_that_cuts_the_output_is_an_error(smol):
    with pytest.raises(StructuredOutputError, match="stop string"):
        smol.generate(CHAT, response_format=CAT, max_tokens=120, stop=['"age"'])


def test_regex_and_grammars(smol):
    assert re.fullmatch(r" [A-Z][a-z]+\.", smol.generate("The capital of France is", regex=r" [A-Z][a-z]+\.", max_tokens=10))
    gbnf = 'root ::= " " ("yes" | "no")'
    assert smol.generate("Is the sky blue? Answer:", grammar=gbnf, max_tokens=5) in (" yes", " no")
    lark = 'start: " " NUM " apples"\nNUM: /[0-9]{1,3}/'
    assert re.fullmatch(r" [0-9]{1,3} apples", smol.generate("How many apples? I have", grammar=lark, max_tokens=8))


def test_required_tool_call_validates(smol):
    reply = smol.generate(ASK, tools=[WEATHER, BOOK], tool_choice="required", max_tokens=80)
    assert reply.tool_calls and reply.stop_reason == "tool_calls"
    by_name = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, BOOK)}
    for call in reply.tool_calls:
        assert isinstance(call, ToolCall) and call.id.startswith("call_")
        jsonschema.validate(call.arguments, {**by_name[call.name], "additionalProperties": False})
        assert json.loads(call.to_openai()["function"]["arguments"]) == call.arguments
    assert "<tool_call>" not in reply


def test_named_tool_choice_and_none(smol):
    reply = smol.generate(
        ASK, tools=[WEATHER, BOOK], tool_choice={"type": "function", "function": {"name": "book_flight"}}, max_tokens=80, parallel_tool_calls=False
    )
    assert [c.name for c in reply.tool_calls] == ["book_flight"]
    jsonschema.validate(reply.tool_calls[0].arguments, BOOK["function"]["parameters"])
    plain = smol.generate(ASK, tools=[WEATHER], tool_choice="none", max_tokens=20)
    assert not plain.tool_calls and "<tool_call>" not in plain


def test_tool_results_go_back_as_messages(smol):
    (call,) = smol.generate(ASK, tools=[WEATHER], tool_choice="required", max_tokens=60, parallel_tool_calls=False).tool_calls
    turn = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [call.to_openai()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 21, "sky": "sunny"})},
    ]
    text = smol.runner.llm.apply_chat_template(turn, tools=ToolSet([WEATHER]))
    assert "<tool_response>" in text and '"temp_c": 21' in text and '"get_weather"' in text
    reply = smol.generate(turn, tools=[WEATHER], tool_choice="none", max_tokens=30)
    assert isinstance(reply, str) and not reply.tool_calls


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(response_format=CAT, regex="a+"), "at most one"),
        (dict(tools=[WEATHER], grammar='start: "a"'), "cannot be combined"),
        (dict(response_format="json"), "response_format must be a dict"),
        (dict(response_format={"type": "json_schema"}), "needs 'json_schema'"),
        (dict(grammar="start: undefined_rule"), "grammar"),
        (dict(grammar="   "), "non-empty"),
        (dict(regex=3), "regex must be a str"),
        (dict(tool_choice="required"), "needs tools"),
        (dict(tools=[{"type": "function", "function": {"name": "bad name!"}}]), "function name"),
        (dict(tools=[WEATHER, WEATHER]), "unique"),
        (dict(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}), "not among the tools"),
        (dict(tools=[WEATHER], tool_choice="sometimes"), "tool_choice must be one of"),
        (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]), "type 'object'"),
        (dict(tools=WEATHER), "non-empty list"),
    ],
)
def test_bad_requests_are_refused_before_any_work(smol, kwargs, match):
    with pytest.raises(GenerationError, match=match):
        smol.generate_stream(ASK, **kwargs)


def test_tools_need_a_chat(smol):
    with pytest.raises(GenerationError, match="chat prompt"):
        smol.generate("What is the weather?", tools=[WEATHER])


def test_parse_refuses_malformed_calls():
    tools = ToolSet([WEATHER])
    content, calls = tools.parse('Sure. <tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>')
    assert content == "Sure. " and calls[0].name == "get_weather" and calls[0].arguments == {"city": "Rome"}
    for bad in ['<tool_call>{"name": "get_weather"', '<tool_call>{"name": "x", "arguments": {}}</tool_call>', "<tool_call>not json</tool_call>"]:
        with pytest.raises(StructuredOutputError):
            tools.parse(bad)


def test_native_template_gets_the_tools():
    template = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% for c in m.tool_calls or [] %}<tool_call>{{ c.function.arguments | tojson }}"
        "</tool_call>{% endfor %}{% endfor %}{% if tools %}[{{ tools | length }} tools]{% endif %}"
    )
    tools = ToolSet([WEATHER])
    assert tools.native(template) and not tools.native("{{ messages }}")
    msgs = tools.messages_for(
        [{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]}], template
    )
    assert msgs[0]["tool_calls"][0]["function"]["arguments"] == {"city": "Rome"}  # templates want the object


# --- the mask against a brute-force reference ---------------------------------------------------


def _tiny_llm(tmp_path_factory, arch="llama", **kw):
    from test_architectures import ARCH_CASES, write_model

    spec = dict(ARCH_CASES[arch])
    path = str(tmp_path_factory.mktemp(arch) / f"{arch}.gguf")
    write_model(path, spec.pop("arch", arch), **spec, **kw)
    return LLM(path, impl="numpy")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    llm = _tiny_llm(tmp_path_factory)
    yield llm
    llm.close()


def test_mask_allows_exactly_the_tokens_that_continue_the_regex(tiny):
    # The language [0-9]{2,4}(ab|cd) and, written out by hand, the set of its prefixes.
    con = Constraint(tiny.tokenizer, *grammar_for(GenerationConfig(regex=r"[0-9]{2,4}(ab|cd)")))
    prefix = re.compile(r"[0-9]{0,4}|[0-9]{2,4}(a|ab|c|cd)", re.ASCII)
    done = b""
    for step in ("1", "2", "a"):
        allowed = np.isfinite(con.apply(np.zeros(tiny.tokenizer.vocab_size, np.float32)))
        for i in range(tiny.tokenizer.vocab_size):
            b = tiny.tokenizer.token_bytes(i)
            viable = bool(b) and i not in tiny.tokenizer.special_ids and bool(prefix.fullmatch((done + b).decode("latin-1")))
            assert allowed[i] == viable, (step, i, b)
        con.consume(tiny.tokenizer.encode(step, add_bos=False)[0])
        done += step.encode()
    assert not con.accepting
    con.consume(tiny.tokenizer.encode("b", add_bos=False)[0])
    assert con.accepting


SCHEMAS = st.recursive(
    st.sampled_from(
        [{"type": "integer"}, {"type": "boolean"}, {"type": "string", "maxLength": 6}, {"enum": ["x", "y", 3]}, {"type": "number"}, {"type": "null"}]
    ),
    lambda inner: st.one_of(
        st.builds(lambda items, n: {"type": "array", "items": items, "maxItems": n}, inner, st.integers(0, 3)),
        st.dictionaries(st.sampled_from(["a", "b", "c", "dé"]), inner, min_size=1, max_size=3).map(
            lambda props: {"type": "object", "properties": props, "required": sorted(props), "additionalProperties": False}
        ),
    ),
    max_leaves=6,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(schema=SCHEMAS, seed=st.integers(0, 2**16))
def test_random_schemas_always_validate_on_random_weights(tiny, schema, seed):
    """A random-weight model wants garbage; the grammar must still make every output valid (or say why not)."""
    try:
        reply = tiny.generate("x", response_format=schema, max_tokens=60, temperature=1.0, seed=seed)
    except StructuredOutputError as exc:
        assert tiny.last_stats.stop_reason == "max_tokens" and exc.partial is not None
        return
    jsonschema.validate(json.loads(reply), schema)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "phi3", "gemma3", "mistral-spm"])
def test_every_architecture_constrains(tmp_path_factory, arch):
    llm = _tiny_llm(tmp_path_factory, arch)
    try:
        schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False}
        assert json.loads(llm.generate("a", response_format=schema, max_tokens=40)) in ({"ok": True}, {"ok": False})
        # The call grammar itself (the tiny models' 128-token context has no room for the tools prompt).
        tools = ToolSet(
            [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"n": {"enum": [1, 2]}}, "required": ["n"]}}}],
            "required",
            parallel=False,
        )
        _, calls = tools.parse(llm.generate("a", grammar=tools.grammar(), max_tokens=100))
        assert [(c.name, c.arguments) for c in calls] in ([("f", {"n": 1})], [("f", {"n": 2})])
    finally:
        llm.close()


def test_cli_generate_with_a_schema_file(tmp_path, capsys):
    from edgesdk.cli import main

    schema = tmp_path / "city.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}))
    assert main(["generate", smollm2_path(), "Name a city as JSON.", "--json-schema", str(schema), "-n", "40"]) == 0
    out, _ = capsys.readouterr()
    assert set(json.loads(out)) == {"city"}
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["generate", smollm2_path(), "x", "--json-schema", str(tmp_path / "bad.json")]) != 0
    assert "is not JSON" in capsys.readouterr().err


def test_tools_with_a_json_answer_format(smol):
    """OpenAI allows response_format beside tools: the reply is a call, or JSON of the schema."""
    answer = {"type": "object", "properties": {"reply": {"type": "string", "maxLength": 40}}, "required": ["reply"], "additionalProperties": False}
    r = smol.generate(ASK, tools=[WEATHER], response_format=answer, max_tokens=80, parallel_tool_calls=False)
    if r.tool_calls:
        assert r == "" and r.tool_calls[0].name == "get_weather"
    else:
        jsonschema.validate(json.loads(r), answer)
    none = smol.generate(ASK, tools=[WEATHER], tool_choice="none", regex=r"[A-Z][a-z ]{0,30}\.", max_tokens=40)
    assert re.fullmatch(r"[A-Z][a-z ]{0,30}\.", none) and not none.tool_calls
    with pytest.raises(GenerationError, match="cannot be combined with tools"):
        smol.generate_stream(ASK, tools=[WEATHER], regex="a+")


def test_the_turn_after_a_call_reuses_the_cache(smol):
    (call,) = smol.generate(ASK, tools=[WEATHER], tool_choice="required", max_tokens=60, parallel_tool_calls=False).tool_calls
    prompt_tokens = smol.runner.last_stats.prompt_tokens
    turn = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [call.to_openai()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'},
    ]
    smol.generate(turn, tools=[WEATHER], tool_choice="none", max_tokens=5)
    assert smol.runner.last_stats.cached_tokens >= prompt_tokens - 1  # the system prompt with the functions is shared


def test_forced_tokens_skip_forward_passes(smol):
    """A fixed key is forced by the schema: those tokens are chosen without a pass of their own."""
    schema = {
        "type": "object",
        "properties": {"a_rather_long_key_name_here": {"enum": ["yes", "no"]}},
        "required": ["a_rather_long_key_name_here"],
        "additionalProperties": False,
    }
    reply = smol.generate(CHAT, response_format=schema, max_tokens=40)
    stats = reply.stats
    assert json.loads(reply)["a_rather_long_key_name_here"] in ("yes", "no")
    assert stats.forward_passes < stats.generated_tokens
