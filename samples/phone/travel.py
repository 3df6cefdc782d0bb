"""The travel assistant's tool step: a spoken booking request -> a ``book_flight`` call -> a booking
file -> the model's confirmation, as three pipeline stages between ASR and TTS.

    llm     (PlannerStage)  a booking request becomes a book_flight call; anything else is answered as before
    tool    (ToolStage)     runs the local function the call names, writes the booking
    reply   (ReplyStage)    the tool's result goes back to the model, which confirms it

The pipeline is a line, so the answers the llm stage streams for other questions pass through the
tool and reply stages untouched (they count as those stages' calls, at ~0 ms each).

Why the call is this constrained: SmolLM2-135M, asked for ``book_flight`` under a plain schema
(cities as strings), wrote "Munim" for Madrid, "Austria" for Vienna, "Monday" for "today".
So the tool's schema is made per request: ``origin`` and ``destination`` are an ``enum`` of the
place names the transcript contains, ``day`` of the days it says; the model only assigns the roles.
What it assigns is checked against the words "from X" / "to Y"; a request the model or the
transcript cannot fill is asked again, never booked wrong.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping

import attrs

from edgesdk._io import atomic_write_bytes
from edgesdk.errors import StructuredOutputError
from edgesdk.pipeline import LlmStage, Stage, StageContext

__all__ = [
    "DAYS",
    "Booking",
    "book_flight",
    "booking_tool",
    "wants_booking",
    "places",
    "missing",
    "check_call",
    "spoken_confirmation",
    "ToolRequest",
    "ToolResult",
    "PlannerStage",
    "ToolStage",
    "ReplyStage",
]

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "today", "tomorrow")
# With tool_choice="auto" SmolLM2-135M called book_flight for none of five booking requests (it
# explained how to call a function instead), so the words decide whether the turn is a booking, and
# then the call is forced (tool_choice names the function).
_BOOKING = re.compile(r"\b(book|booking|flight|flights|fly|flying|plane|ticket)\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*|[.!?]")
_NOT_PLACES = {"I", *DAYS}
SYSTEM_PROMPT = "You are a travel assistant on a phone. Book flights with the book_flight function."
ASK_CITIES = "Which city are you flying from, and where to?"
ASK_DAY = "Which day would you like to fly? Say a weekday, today or tomorrow."
ASK_AGAIN = "Sorry, from which city to which city? Please say it again."


# -- the request ----------------------------------------------------------------------------------


def wants_booking(text: str) -> bool:
    return bool(_BOOKING.search(text))


def places(text: str) -> list[str]:
    """Place names in a transcript, in order: runs of capitalized words, except a sentence's first
    word (capitalized by grammar, not because it is a name), "I" and day names."""
    found: list[str] = []
    run: list[str] = []
    start = True
    for w in _WORD.findall(text):
        if w[0].isupper() and not start and w not in _NOT_PLACES:
            run.append(w)
            continue
        if run:
            found.append(" ".join(run))
            run = []
        start = w in ".!?"
    if run:
        found.append(" ".join(run))
    return list(dict.fromkeys(found))  # each once, first mention first


def days(text: str) -> list[str]:
    return [d for d in DAYS if re.search(rf"\b{d}\b", text, re.IGNORECASE)]


def missing(text: str) -> str | None:
    """The question to ask when ``text`` cannot fill a booking whatever the model does; else None."""
    if len(places(text)) < 2:
        return ASK_CITIES
    if not days(text):
        return ASK_DAY
    return None


def booking_tool(text: str) -> dict:
    """The ``book_flight`` tool (OpenAI style) for this request: its cities and days are the ones said."""
    said = places(text)
    return {
        "type": "function",
        "function": {
            "name": "book_flight",
            "description": "Book a flight for the user.",
            "parameters": {
                "type": "object",
                "properties": {
                    "origin": {"enum": said, "description": "city the flight leaves from"},
                    "destination": {"enum": said, "description": "city the flight goes to"},
                    "day": {"enum": days(text), "description": "day of the flight"},
                },
                "required": ["origin", "destination", "day"],
            },
        },
    }


def check_call(arguments: Mapping[str, Any], text: str) -> str | None:
    """The question to ask when the model's arguments do not fit what was said; None when they do.

    The enum already keeps every value among the words said; the roles are what a small model gets
    wrong ("to Berlin from London" booked as Berlin -> London), so "from X" / "to Y" must agree.
    """
    origin, destination = arguments["origin"], arguments["destination"]
    if origin == destination:
        return ASK_CITIES
    for city in places(text):
        if re.search(rf"\bfrom\s+{re.escape(city)}\b", text, re.IGNORECASE) and city != origin:
            return ASK_AGAIN
        if re.search(rf"\bto\s+{re.escape(city)}\b", text, re.IGNORECASE) and city != destination:
            return ASK_AGAIN
    return None


# -- the tool -------------------------------------------------------------------------------------


@attrs.frozen
class Booking:
    """A booked flight and the file that records it."""

    id: str
    origin: str
    destination: str
    day: str
    path: Path

    @property
    def content(self) -> str:
        """What goes back to the model as the tool's result. A sentence, not JSON: the 135M model
        mostly repeats its last input, and a sentence repeated is a confirmation worth speaking."""
        when = self.day if self.day in ("today", "tomorrow") else f"on {self.day}"
        return f"Booked your flight from {self.origin} to {self.destination} {when}."

    def confirms(self, text: str) -> bool:
        """Whether ``text`` names this booking's cities and day (a confirmation that may be spoken)."""
        return all(re.search(rf"\b{re.escape(v)}\b", text, re.IGNORECASE) for v in (self.origin, self.destination, self.day))


def book_flight(folder, origin: str, destination: str, day: str) -> Booking:
    """The local "booking service": one JSON file per booking in ``folder``, written atomically
    (a crash never leaves half a booking behind)."""
    booking_id = f"FL-{uuid.uuid4().hex[:8].upper()}"
    path = Path(folder) / f"{booking_id}.json"
    record = {"id": booking_id, "origin": origin, "destination": destination, "day": day, "booked_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_bytes(path, (json.dumps(record, indent=2) + "\n").encode("utf-8"))
    return Booking(booking_id, origin, destination, day, path)


_MARKUP = re.compile(r"</?[A-Za-z_]+>")


def spoken_confirmation(reply: str, result) -> str:
    """The model's reply as speech (markup it repeated removed), or the tool's own sentence when the
    reply does not name what was booked: a wrong confirmation is never spoken."""
    text = " ".join(_MARKUP.sub(" ", reply).split())
    return text if result.confirms(text) else result.content


# -- the stages -----------------------------------------------------------------------------------


@attrs.frozen
class ToolRequest:
    """A call the llm stage made, with the conversation and the tools it was made with."""

    messages: list
    tools: list
    call: Any  # edgesdk.llm.ToolCall


@attrs.frozen
class ToolResult:
    """The conversation with the call and its result appended, ready for the model to answer."""

    messages: list
    tools: list
    result: Any  # what the tool returned: .content for the model, .confirms(text)


class PlannerStage(Stage):
    """Transcript -> a :class:`ToolRequest` for a booking, a question when it cannot be booked, or
    the streamed answer of ``answerer`` (the usual :class:`LlmStage`, hybrid or not) otherwise.
    Bookings never leave the device: the call is made by the device session."""

    name = "llm"

    def __init__(self, answerer: LlmStage, max_tokens: int = 64):
        self.answerer = answerer
        self.max_tokens = max_tokens

    @property
    def sessions(self):
        return self.answerer.sessions

    @property
    def session(self):
        return self.answerer.sessions["llm"]

    def warmup(self) -> None:
        self.session.generate("Hi", regex="[a-z]", max_tokens=2)  # builds the grammar engine's view of the vocabulary (~0.4 s)
        self.answerer.warmup()  # ends with an empty KV cache

    def process(self, value, ctx: StageContext):
        if not (isinstance(value, str) and wants_booking(value)):
            yield from self.answerer.process(value, ctx)
            return
        question = missing(value)
        if question is None:
            request = self._call(value)
            question = "Sorry, I did not get that. " + ASK_AGAIN if request is None else check_call(request.call.arguments, value)
            if question is None:
                ctx.emit("tool_call", request.call)
                yield request
                return
            if request is not None:
                ctx.emit("tool_call_refused", (request.call, question))
        ctx.emit("answer", question)
        yield question

    def _call(self, text: str) -> ToolRequest | None:
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}]
        tools = [booking_tool(text)]
        try:
            reply = self.session.generate(
                messages,
                tools=tools,
                tool_choice={"type": "function", "function": {"name": "book_flight"}},
                parallel_tool_calls=False,
                max_tokens=self.max_tokens,
                speculative="prompt_lookup",
            )
        except StructuredOutputError:  # max_tokens ended inside the call: nothing valid to run
            return None
        return ToolRequest(messages, tools, reply.tool_calls[0])


class ToolStage(Stage):
    """Runs the local function a :class:`ToolRequest` names (no model: its row in the report is the
    tool's own time); everything else passes through."""

    name = "tool"

    def __init__(self, functions: Mapping[str, Callable[..., Any]]):
        self.functions = dict(functions)

    def process(self, value, ctx: StageContext):
        if not isinstance(value, ToolRequest):
            yield value
            return
        call = value.call
        result = self.functions[call.name](**call.arguments)
        ctx.emit("tool_result", result)
        messages = value.messages + [
            {"role": "assistant", "content": None, "tool_calls": [call.to_openai()]},
            {"role": "tool", "tool_call_id": call.id, "content": result.content},
        ]
        yield ToolResult(messages, value.tools, result)


class ReplyStage(Stage):
    """A :class:`ToolResult` -> the model's confirmation, as text for TTS; everything else passes through.

    Shares the llm stage's session (one model in memory: give its StageSpec ``memory_mb=0``); that
    stage closes it.
    """

    name = "reply"

    def __init__(self, session, max_tokens: int = 40):
        self.session = session
        self.max_tokens = max_tokens

    @property
    def sessions(self):
        return {"llm": self.session}

    def process(self, value, ctx: StageContext):
        if not isinstance(value, ToolResult):
            yield value
            return
        # tool_choice="none": the tools stay in the prompt (the result is read as theirs), no new call.
        reply = self.session.generate(value.messages, tools=value.tools, tool_choice="none", max_tokens=self.max_tokens, stop=["\n"])
        text = spoken_confirmation(reply, value.result)
        ctx.emit("answer", text)
        yield text

    def close(self) -> None:
        pass  # the session belongs to the llm stage
