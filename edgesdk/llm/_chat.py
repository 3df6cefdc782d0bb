"""Chat templates: ``tokenizer.chat_template`` rendered exactly as Hugging Face transformers renders it.

A chat template is a Jinja program shipped inside the model and written against transformers'
``apply_chat_template``; the model was trained on that program's output, so any difference (one
newline, one escaped character) is a prompt the model has never seen. This module therefore rebuilds
the same environment -- ``ImmutableSandboxedEnvironment`` with ``trim_blocks``/``lstrip_blocks``,
``loopcontrols`` and a ``{% generation %}`` tag, transformers' ``tojson``, ``raise_exception``,
``strftime_now``, ``dict`` and ``namespace`` -- and prepares the inputs the same way: message keys
whose value is None are dropped, everything the template sees is plain JSON-like data, and
reasoning text is visible under every name templates read it by.

Every failure is a :class:`ChatTemplateError` (a :class:`~edgesdk.GenerationError`) that names the
template line, whether the template does not parse, fails while rendering, or calls
``raise_exception``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from datetime import datetime
from typing import Any, Mapping, Sequence

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.sandbox
import jinja2.utils
import numpy as np

from .._errors import GenerationError

__all__ = ["ChatTemplateError", "DEFAULT_TEMPLATES", "normalize_messages", "render_chat", "template_for"]


class ChatTemplateError(GenerationError):
    """A chat template did not compile or render. ``line`` is the template's line (1-based) or None."""

    def __init__(self, message: str, line: int | None = None):
        self.line = line
        super().__init__(message)


# --- built-in templates -------------------------------------------------------------------------

# google/gemma-3-*-it's chat_template (tokenizer_config.json), verbatim. The Gemma 3 GGUFs that
# ggml-org publishes (270M included) carry no tokenizer.chat_template, and llama.cpp would then fall
# back to ChatML, a format Gemma was never trained on.
_GEMMA3 = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

#: Templates for GGUF architectures whose files commonly ship without ``tokenizer.chat_template``,
#: keyed by ``general.architecture``.
DEFAULT_TEMPLATES: dict[str, str] = {"gemma3": _GEMMA3}


def template_for(chat_template: str | None, default: str | None) -> str | None:
    """The template to render: the model's own when it has one, else the built-in named ``default``
    (its architecture description's ``chat_template``, see :mod:`edgesdk.llm.arch`)."""
    if isinstance(chat_template, str) and chat_template.strip():
        return chat_template
    return DEFAULT_TEMPLATES.get(default) if default else None


# --- inputs -------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """``value`` rebuilt from JSON-like types only.

    Templates come from model files and run in a sandbox that only knows which attributes of the
    builtin types are safe; a numpy scalar, a str subclass or an app object would hand the template
    methods the sandbox has never vetted. transformers rebuilds its inputs the same way, and where a
    value is not data at all it shows the template a placeholder naming its type, as transformers does.
    """
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return _plain(value.item())  # np.bool_(False) must stay falsy
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):  # pydantic models, e.g. OpenAI SDK messages
        return _plain(value.model_dump())
    return f"<{type(value).__name__}>"


# The standard name first: templates read reasoning as reasoning_content, gpt-oss's as thinking.
_REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")


def _with_reasoning_aliases(message: dict) -> dict:
    reasoning = next((message[k] for k in _REASONING_KEYS if message.get(k) is not None), None)
    if reasoning is None:
        return message
    # Same key order as transformers, which matters to templates that dump a message with tojson.
    return {"thinking": reasoning, **message, "reasoning_content": reasoning}


def _short(value: Any, limit: int = 120) -> str:
    # Error messages quote the offending value; a whole pasted document would bury the cause.
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _check_part(i: int, j: int, part: Any) -> None:
    if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
        raise GenerationError(f"message {i}: content part {j} must be a mapping with a str 'type', got {_short(part)}")
    if part["type"] == "text" and not isinstance(part.get("text"), str):
        raise GenerationError(f"message {i}: text content part {j} needs a str 'text', got {part.get('text')!r}")


def normalize_messages(messages: Any) -> list[dict[str, Any]]:
    """Validated plain copies of chat messages, prepared as transformers prepares them.

    A message is a mapping with a str ``role`` and a ``content`` that is a str or a list of content
    parts (``{"type": "text", "text": ...}``, other types passed through); a message carrying
    ``tool_calls`` may have no content (None or absent). Every other key (``tool_calls``, ``name``,
    ``tool_call_id``, ``reasoning_content``, ...) passes through to the template.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise GenerationError(f"messages must be a list of {{'role': ..., 'content': ...}} mappings, got {type(messages).__name__}")
    if not messages:
        raise GenerationError("messages is empty")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise GenerationError(f"message {i} must be a mapping with 'role' and 'content', got {_short(m)}")
        role = m.get("role")
        if not isinstance(role, str) or not role:
            raise GenerationError(f"message {i} needs a non-empty str 'role', got {_short(m)}")
        content, tool_calls = m.get("content"), m.get("tool_calls")
        if tool_calls is not None and (
            isinstance(tool_calls, (str, bytes, Mapping)) or not isinstance(tool_calls, Sequence) or not all(isinstance(c, Mapping) for c in tool_calls)
        ):
            raise GenerationError(f"message {i}: tool_calls must be a list of mappings, got {_short(tool_calls)}")
        if content is None:
            if not tool_calls:
                raise GenerationError(f"message {i} ({role}) has no 'content'; only a message with tool_calls may omit it")
        elif isinstance(content, (list, tuple)):
            for j, part in enumerate(content):
                _check_part(i, j, part)
        elif not isinstance(content, str):
            raise GenerationError(
                f"message {i}: content must be a str or a list of content parts, got {type(content).__name__}"
                + (" (json.dumps a tool result first)" if isinstance(content, Mapping) else "")
            )
        for key in ("name", "tool_call_id"):
            if m.get(key) is not None and not isinstance(m[key], str):
                raise GenerationError(f"message {i}: {key} must be a str, got {type(m[key]).__name__}")
        # transformers drops None-valued keys: templates test `'content' in message` or `is defined`,
        # and many would print a literal "None" otherwise.
        out.append(_with_reasoning_aliases(_plain({k: v for k, v in m.items() if v is not None})))
    return out


def _mapping_list(value: Any, what: str):
    if value is None:
        return None
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence) or not all(isinstance(v, Mapping) for v in value):
        raise GenerationError(f"{what} must be a list of mappings, got {_short(value)}")
    return _plain(value)


# --- the environment ----------------------------------------------------------------------------


class _Raised(jinja2.TemplateError):
    """What ``raise_exception`` throws; render_chat turns it into a ChatTemplateError with the line."""


def _raise_exception(message):
    raise _Raised(str(message))


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Jinja's own tojson HTML-escapes <, >, & and ' and sorts keys; templates expect plain json.dumps,
    # which is what they were written against.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


class _Dict:
    # The real dict type would give the template its class attributes; a constructor is all it needs.
    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


def _check_namespace_name(name):
    if isinstance(name, str) and name.startswith("_"):
        raise jinja2.exceptions.SecurityError(f"a chat template cannot store underscore-prefixed attribute {name!r} on a namespace")


class _Namespace(jinja2.utils.Namespace):
    # A namespace stores attributes in a dict the sandbox never inspects: dunder names must stay out.
    def __init__(*args, **kwargs):  # noqa: N805 -- Jinja's signature, so namespace(self=...) still works
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _check_namespace_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _check_namespace_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}``: transformers marks assistant text with it to build
    training masks. Rendering needs only the body, in the call-block scope transformers gives it."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def _environment() -> jinja2.sandbox.ImmutableSandboxedEnvironment:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now, dict=_Dict(), namespace=_Namespace)
    return env


_ENV = _environment()


@functools.lru_cache(maxsize=64)
def _compile(template: str) -> jinja2.Template:
    # Every chat turn renders the same template again; compiling is most of the cost of a render.
    try:
        return _ENV.from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise ChatTemplateError(f"chat template syntax error at line {exc.lineno}: {exc.message}", line=exc.lineno) from exc


def _template_line(tb) -> int | None:
    # Jinja rewrites tracebacks so that compiled template code shows as frames of "<template>" at
    # template lines; the innermost one is where the template was when it failed.
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def render_chat(
    template: str | None,
    messages,
    add_generation_prompt: bool = True,
    *,
    bos_token: str | None = None,
    eos_token: str | None = None,
    tools=None,
    documents=None,
    **extra,
) -> str:
    """``messages`` through chat ``template``: the text transformers' ``apply_chat_template(...,
    tokenize=False)`` gives for the same arguments.

    ``bos_token``/``eos_token`` are the tokens' text (left undefined for the template when None, as
    transformers does for a tokenizer without them). ``tools``: JSON schemas; ``documents``: RAG
    documents (mappings). ``extra`` reaches the template as variables (``enable_thinking``,
    ``date_string``, other special tokens, ...).
    """
    msgs = normalize_messages(messages)
    if not template:
        raise GenerationError("this model has no chat template (tokenizer.chat_template); pass a plain string prompt")
    if not isinstance(template, str):
        raise GenerationError(f"chat template must be a str, got {type(template).__name__}")
    ctx = _plain(extra)
    for name, token in (("bos_token", bos_token), ("eos_token", eos_token)):
        if token is not None:
            if not isinstance(token, str):
                raise GenerationError(f"{name} must be the token's text (str), got {type(token).__name__}")
            ctx[name] = str.__str__(token)
    ctx.update(
        messages=msgs,
        tools=None if tools is None else list(_mapping_list(tools, "tools (JSON schemas)")),
        documents=_mapping_list(documents, "documents"),
        add_generation_prompt=add_generation_prompt,
    )
    compiled = _compile(template)
    try:
        return compiled.render(ctx)
    except _Raised as exc:
        line = _template_line(exc.__traceback__)
        where = f"chat template line {line}" if line else "chat template"
        raise ChatTemplateError(f"{where}: {exc.message}", line=line) from None
    except Exception as exc:  # noqa: BLE001 -- a template can fail in any way Python can; each is named
        line = _template_line(exc.__traceback__)
        where = f"chat template failed at line {line}" if line else "chat template failed"
        raise ChatTemplateError(f"{where}: {type(exc).__name__}: {exc}", line=line) from exc
