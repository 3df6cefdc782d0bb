"""Tool calling: OpenAI-style function lists, the call format, its grammar, and parsing replies.

One format is used for every model: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``
(the Hermes / Qwen 2.5+ markup). A chat template that writes this markup itself (it mentions
``<tool_call>``) gets ``tools=`` and renders the tool messages its own way; for every other template
the functions and the format are described in a system message and the tool turns are written as
plain messages, so any model can call tools. Calls are generated under a grammar (see
:func:`ToolSet.grammar`), so a reply's calls always name a given function and their arguments
always validate against its ``parameters`` schema.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Mapping, Sequence

import attrs

from .._errors import GenerationError, StructuredOutputError

__all__ = ["OPEN", "CLOSE", "ToolCall", "ToolSet"]

OPEN, CLOSE = "<tool_call>", "</tool_call>"
#: JSON as models write it on one line: no free whitespace (it only gives a small model room to ramble).
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

_CHOICES = ("auto", "none", "required")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@attrs.frozen
class ToolCall:
    """One function call of a reply: ``arguments`` is the parsed JSON object (validated by the grammar)."""

    id: str
    name: str
    arguments: dict = attrs.field(eq=False)

    def to_openai(self) -> dict:
        """The OpenAI ``tool_calls`` entry (``arguments`` as a JSON string), also accepted back in messages."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)}}


def _function(i: int, tool: Any) -> dict:
    """The ``function`` part of one tools entry, checked: a name and a parameters schema object."""
    if not isinstance(tool, Mapping):
        raise GenerationError(f"tools[{i}] must be a mapping like {{'type': 'function', 'function': {{...}}}}, got {type(tool).__name__}")
    if tool.get("type", "function") != "function":
        raise GenerationError(f"tools[{i}]: only type 'function' is supported, got {tool.get('type')!r}")
    fn = tool.get("function", tool)  # a bare function description is accepted too
    if not isinstance(fn, Mapping):
        raise GenerationError(f"tools[{i}].function must be a mapping, got {type(fn).__name__}")
    name = fn.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise GenerationError(f"tools[{i}]: function name must be 1-64 letters, digits, '_', '.' or '-', got {name!r}")
    params = fn.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(params, Mapping) or params.get("type", "object") != "object":
        raise GenerationError(f"tools[{i}] ({name}): parameters must be a JSON schema of type 'object', got {params!r}")
    desc = fn.get("description", "")
    if not isinstance(desc, str):
        raise GenerationError(f"tools[{i}] ({name}): description must be a str, got {type(desc).__name__}")
    return {"name": name, "description": desc, "parameters": dict(params)}


class ToolSet:
    """The functions of one request and its ``tool_choice``, validated on construction."""

    def __init__(self, tools: Any, tool_choice: Any = "auto", parallel: bool = True):
        if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence) or not tools:
            raise GenerationError(f"tools must be a non-empty list of OpenAI-style function tools, got {type(tools).__name__}")
        self.functions = [_function(i, t) for i, t in enumerate(tools)]
        names = [f["name"] for f in self.functions]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise GenerationError(f"tools: function names must be unique, repeated: {', '.join(dup)}")
        self.choice, self.forced = self._choice(tool_choice, names)
        self.parallel = parallel

    @staticmethod
    def _choice(choice: Any, names: list[str]) -> tuple[str, str | None]:
        if isinstance(choice, str):
            if choice not in _CHOICES:
                raise GenerationError(f"tool_choice must be one of {_CHOICES} or {{'type': 'function', 'function': {{'name': ...}}}}, got {choice!r}")
            return choice, None
        name = choice.get("function", {}).get("name") if isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping) else None
        if name is None and isinstance(choice, Mapping):
            name = choice.get("name")
        if not isinstance(name, str):
            raise GenerationError(f"tool_choice must name a function as {{'type': 'function', 'function': {{'name': ...}}}}, got {choice!r}")
        if name not in names:
            raise GenerationError(f"tool_choice names {name!r}, which is not among the tools ({', '.join(names)})")
        return "required", name

    # --- the prompt -----------------------------------------------------------------------------

    @staticmethod
    def native(template: str | None) -> bool:
        """Whether ``template`` writes this module's call markup itself (then it also gets ``tools=``)."""
        return bool(template) and OPEN in template

    def template_tools(self) -> list[dict]:
        return [{"type": "function", "function": f} for f in self.functions]

    def messages_for(self, messages: Sequence[Mapping], template: str | None) -> list[dict]:
        """``messages`` for a template without tool support: the functions in a system message,
        assistant calls as call markup, tool results as user turns (templates without tools often
        accept only system/user/assistant roles)."""
        if self.native(template):
            return [_with_dict_arguments(m) for m in messages]
        out = [dict(m) for m in messages]
        intro = self.system_prompt()
        if out and out[0].get("role") == "system" and isinstance(out[0].get("content"), str):
            out[0]["content"] = out[0]["content"] + "\n\n" + intro
        else:
            out.insert(0, {"role": "system", "content": intro})
        return [_plain_turn(m) for m in out]

    def system_prompt(self) -> str:
        # The same text whatever tool_choice is (the grammar enforces the choice), so the turn after a
        # call reuses the KV cache of the call's prompt.
        fns = "\n".join(json.dumps(f, ensure_ascii=False) for f in self.functions)
        return (
            f"You can call these functions (JSON schemas):\n{fns}\nCall a function only when it helps answer. "
            f'To call one, reply with\n{OPEN}{{"name": "<function name>", "arguments": {{<arguments as JSON>}}}}{CLOSE}'
        )

    # --- the grammar ----------------------------------------------------------------------------

    def call_schema(self) -> dict:
        """JSON schema of one call object: a function name with its arguments."""
        fns = [f for f in self.functions if self.forced in (None, f["name"])]
        alts = [
            {
                "type": "object",
                # Arguments a function does not declare are not arguments (OpenAI's strict mode does the same).
                "properties": {"name": {"const": f["name"]}, "arguments": {"additionalProperties": False, **f["parameters"]}},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for f in fns
        ]
        schema = alts[0] if len(alts) == 1 else {"anyOf": alts}
        return {**schema, "x-guidance": JSON_LAYOUT}

    def grammar(self, answer_schema: dict | None = None) -> str:
        """A Lark grammar (llguidance dialect) for the whole reply under this ``tool_choice``.

        Free text never contains the opening markup; once it appears, only valid calls follow.
        The openers are lazy lexemes so the text before a call ends at the first ``<tool_call>``.
        ``answer_schema``: a reply that is not a call must be JSON of this schema (``response_format``);
        then nothing precedes a call (a JSON answer cannot be mistaken for the opening markup).
        """
        if answer_schema is None:
            answer = f"answer: TEXT\nTEXT: /(?s:.*)/ & ~/(?s:.*{re.escape(OPEN)}.*)/"
        else:
            answer = f"answer: %json {json.dumps({**answer_schema, 'x-guidance': JSON_LAYOUT})}"
        if self.choice == "none":
            return f"start: answer\n{answer}\n"
        if self.choice == "required":
            head = "start: ws_open call CLOSE"
        else:
            head = "start: answer | open call CLOSE" if answer_schema is None else "start: answer | ws_open call CLOSE"
        if self.parallel:
            head += " more*"
        return "\n".join(
            [
                head,
                "more: ws_open call CLOSE",
                answer,
                f"open[lazy]: /(?s:.*){re.escape(OPEN)}/",
                f"ws_open[lazy]: /[ \\t\\r\\n]{{0,4}}{re.escape(OPEN)}/",  # bounded: no endless blank lines
                f"CLOSE: {json.dumps(CLOSE)}",
                f"call: %json {json.dumps(self.call_schema())}",
                "",
            ]
        )

    # --- the reply ------------------------------------------------------------------------------

    def parse(self, text: str) -> tuple[str, tuple[ToolCall, ...]]:
        """Split a reply into its text content and its calls; raises if a call is malformed."""
        head, sep, rest = text.partition(OPEN)
        if not sep:
            return text, ()
        calls = []
        for i, chunk in enumerate((OPEN + rest).split(OPEN)[1:]):
            body, closed, tail = chunk.partition(CLOSE)
            try:
                obj = json.loads(body)
            except ValueError as exc:
                raise StructuredOutputError(f"tool call {i} is not JSON ({exc})", partial=text) from None
            if not closed or tail.strip() or not isinstance(obj, dict) or not isinstance(obj.get("arguments"), dict):
                raise StructuredOutputError(f"tool call {i} is incomplete or malformed: {body[:80]!r}", partial=text)
            if obj.get("name") not in {f["name"] for f in self.functions}:
                raise StructuredOutputError(f"tool call {i} names an unknown function {obj.get('name')!r}", partial=text)
            calls.append(ToolCall(f"call_{uuid.uuid4().hex[:24]}", obj["name"], obj["arguments"]))
        return head, tuple(calls)


def _arguments(call: Mapping) -> Mapping:
    fn = call.get("function", call)
    args = fn.get("arguments", {}) if isinstance(fn, Mapping) else {}
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            raise GenerationError(f"tool call {fn.get('name')!r}: arguments is not JSON: {args[:80]!r}") from None
    return {"name": fn.get("name"), "arguments": args}


def _with_dict_arguments(m: Mapping) -> dict:
    """OpenAI messages carry arguments as a JSON string; templates expect the object (as transformers)."""
    m = dict(m)
    if m.get("tool_calls"):
        m["tool_calls"] = [{**c, "function": _arguments(c)} if isinstance(c, Mapping) else c for c in m["tool_calls"]]
    return m


def _plain_turn(m: dict) -> dict:
    if m.get("role") == "tool":
        content = m.get("content")
        return {"role": "user", "content": f"<tool_response>{content if isinstance(content, str) else json.dumps(content)}</tool_response>"}
    if m.get("tool_calls"):
        calls = "".join(OPEN + json.dumps(_arguments(c), ensure_ascii=False) + CLOSE for c in m["tool_calls"])
        return {"role": m["role"], "content": (m.get("content") or "") + calls}
    return m
