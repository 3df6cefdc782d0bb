"""edgesdk.pipeline core: streaming between stage threads, turns and barge-in, memory budget, report."""

import os
import threading

import numpy as np
import pytest

import edgesdk
from edgesdk._errors import PipelineError
from edgesdk._registry import reset_registry
from edgesdk.backend import Backend, Device, Support
from edgesdk.pipeline import FunctionStage, Pipeline, Stage, StageSpec

from conftest import BackendsPlugin, hub_path

WAIT = 30  # seconds a test waits for another thread before calling it a deadlock


def outputs(events):
    return [e.value for e in events if e.kind == "output"]


def test_values_stream_through_stages_in_order():
    pipe = Pipeline([FunctionStage("double", lambda x: 2 * x), FunctionStage("split", lambda x: iter((x, x + 1)))])
    assert outputs(pipe.run(range(5))) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    rep = pipe.report()
    assert [s.name for s in rep.stages] == ["double", "split"]
    assert rep.stage("double").calls == 5 and rep.stage("split").calls == 5
    assert rep.stage("double").p50_s is not None and rep.stage("double").rtf is None


def test_a_stage_works_on_the_first_value_while_the_one_before_is_still_producing():
    second_saw_first = threading.Event()

    def produce(_):
        yield "first"
        if not second_saw_first.wait(WAIT):  # without streaming this would wait forever
            raise AssertionError("the next stage never saw the first value while this one was running")
        yield "second"

    def consume(x):
        second_saw_first.set()
        return x

    pipe = Pipeline([FunctionStage("producer", produce), FunctionStage("consumer", consume)])
    assert outputs(pipe.run(["go"])) == ["first", "second"]


class Opener(Stage):
    """Opens a turn per 'ask', barges in on 'stop'."""

    name = "opener"

    def process(self, value, ctx):
        if value == "stop":
            ctx.barge_in()
            return ()
        ctx.new_turn()
        ctx.emit("speech_end")
        return (value,)


class Talker(Stage):
    """An endless answer, like an LLM that would go on decoding: only cancellation ends it."""

    name = "talker"

    def __init__(self, ask_stop: threading.Event):
        self.closed = []
        self.ask_stop = ask_stop

    def process(self, value, ctx):
        if value == "short":
            yield "bye"
            return
        try:
            n = 0
            while True:
                n += 1
                if n == 3:
                    self.ask_stop.set()
                yield f"tok{n}"
        finally:
            self.closed.append(ctx.turn)


def test_barge_in_cancels_the_answer_in_flight_and_the_next_turn_runs():
    ask_stop = threading.Event()
    talker = Talker(ask_stop)

    def source():
        yield "long"
        assert ask_stop.wait(WAIT)
        yield "stop"
        yield "short"

    pipe = Pipeline([Opener(), talker, FunctionStage("tts", lambda t: t.upper())], queue_size=2)
    events = list(pipe.run(source()))
    assert talker.closed == [1], "the cancelled generator must be closed"
    cancel_at = next(i for i, e in enumerate(events) if e.kind == "cancelled")
    assert events[cancel_at].turn == 1
    assert not [e for e in events[cancel_at:] if e.kind == "output" and e.turn == 1], "no output of a cancelled turn after the cancel"
    assert [e.value for e in events if e.kind == "output" and e.turn == 2] == ["BYE"]
    assert [e.turn for e in events if e.kind == "turn_end"] == [2]
    turns = {t.turn: t for t in pipe.report().turns}
    assert turns[1].cancelled and not turns[2].cancelled
    assert turns[2].started_by == "speech_end" and turns[2].outputs == 1 and turns[2].first_output_s >= 0


def test_a_failing_stage_stops_the_run_and_is_named():
    def boom(x):
        if x == 3:
            raise ValueError("bad value 3")
        return x

    pipe = Pipeline([FunctionStage("ok", lambda x: x), FunctionStage("boom", boom)])
    with pytest.raises(PipelineError, match="stage 'boom'.*bad value 3") as ei:
        list(pipe.run(range(100)))
    assert ei.value.stage == "boom"


def test_closing_the_run_early_stops_every_stage():
    def endless():
        i = 0
        while True:
            i += 1
            yield i

    pipe = Pipeline([FunctionStage("a", lambda x: x)], queue_size=1)
    run = pipe.run(endless())
    assert next(run).value == 1
    run.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("pipeline-")]


def test_bad_pipelines_are_refused():
    with pytest.raises(ValueError, match="at least one stage"):
        Pipeline([])
    with pytest.raises(PipelineError, match="duplicate"):
        Pipeline([FunctionStage("a", abs), FunctionStage("a", abs)])
    with pytest.raises(PipelineError, match="Stage or StageSpec"):
        Pipeline([object()])
    with pytest.raises(ValueError, match="memory_budget_mb"):
        Pipeline([FunctionStage("a", abs)], memory_budget_mb=-1)
    with pytest.raises(PipelineError, match="non-empty"):
        StageSpec("", lambda o: None)
    with pytest.raises(PipelineError, match="not a Stage"):
        Pipeline([StageSpec("x", lambda o: 42)])
    with pytest.raises(PipelineError, match="callable"):
        FunctionStage("f", 3)


class SessionStage(Stage):
    def __init__(self, model, options):
        self.session = edgesdk.Session(model, options)

    @property
    def sessions(self):
        return {"model": self.session}

    def process(self, value, ctx):
        return ({"x": self.session.run(value)["y"]},)  # identity models chain: y feeds the next x


def spec(name, model, **kw):
    return StageSpec(name, lambda opts: SessionStage(model, opts), **kw)


def test_memory_budget_refuses_the_stage_that_does_not_fit():
    vad, llm = hub_path("silero-vad"), hub_path("smollm2-135m")
    with pytest.raises(PipelineError, match="stage 'llm'") as ei:
        Pipeline([spec("vad", vad), spec("llm", llm)], memory_budget_mb=40)
    assert "cpu:0: model needs at least 93.8 MiB, over the 37 MiB budget" in str(ei.value)  # 40 minus the VAD's model
    both = (os.path.getsize(vad) + os.path.getsize(llm)) / 2**20
    with pytest.raises(
        PipelineError, match=r"stage 'vad2': needs 5.0 MiB but only 3.0 MiB of the .* MiB pipeline budget is left \(held by vad .*, llm 93.8 MiB\)"
    ):
        Pipeline([spec("vad", vad), spec("llm", llm), spec("vad2", vad, memory_mb=5)], memory_budget_mb=both + 3)
    pipe = Pipeline([spec("vad", vad), spec("llm", llm)], memory_budget_mb=200)
    rep = pipe.report()
    assert rep.stage("vad").memory_bytes == os.path.getsize(vad) and rep.stage("llm").memory_bytes == os.path.getsize(llm)
    assert rep.stage("llm").placement == {"model": "cpu:0 [cpu]"}
    pipe.close()


class SmallAccel(Backend):
    """A real-memory-sized accelerator: it holds one model, then the pipeline must look elsewhere."""

    name = "smallaccel"
    formats = ("onnx",)

    def __init__(self, memory):
        self.memory = memory

    def probe(self):
        return [Device(self.name, "smallaccel:0", "npu", "small NPU", self.memory, 100)]

    def check(self, model, device, options):
        return Support(ok=True)

    def load(self, model, device, options):
        reg = edgesdk.get_registry()
        cpu = next(d for d in reg.devices() if d.id == "onnxruntime:cpu")
        return reg.backend("onnxruntime").load(model, cpu, options)


def test_a_device_filled_by_earlier_stages_is_avoided_with_the_reason(monkeypatch, identity_onnx):
    monkeypatch.setenv("EDGESDK_BLOCK_PLUGINS", "qnn")
    size = os.path.getsize(identity_onnx)
    reset_registry([BackendsPlugin(SmallAccel(size))])
    try:
        pipe = Pipeline([spec("a", identity_onnx, memory_mb=size / 2**20), spec("b", identity_onnx)])
        where = {k: v["model"] for k, v in pipe.placements.items()}
        assert where["a"].device.id == "smallaccel:0"
        assert where["b"].device.id == "onnxruntime:cpu"
        assert any(r.device == "smallaccel:0" and "held by pipeline stage(s) a" in r.reason for r in where["b"].refusals)
        x = np.ones((1, 16), np.float32)
        out = outputs(pipe.run([{"x": x}]))
        np.testing.assert_array_equal(out[0]["x"], x)
        assert "smallaccel:0 [npu]" in str(pipe.report())
        pipe.close()
    finally:
        reset_registry()


def test_avoid_option_is_validated_and_reported(identity_onnx):
    with pytest.raises(ValueError, match="avoid"):
        edgesdk.SessionOptions(avoid={"cpu": ""})
    with pytest.raises(edgesdk.PlacementError, match="avoided: busy rendering"):
        edgesdk.Session(identity_onnx, avoid={"cpu": "busy rendering"})


def test_report_counts_audio_for_the_real_time_factor():
    class Listener(Stage):
        name = "listener"

        def process(self, value, ctx):
            ctx.add_audio(0.5)
            return (value,)

    pipe = Pipeline([Listener()])
    list(pipe.run(range(4)))
    st = pipe.report().stage("listener")
    assert st.audio_s == 2.0 and st.rtf is not None and st.rtf == st.busy_s / 2.0
    text = str(pipe.report())
    assert "listener" in text and "RTF" in text


def test_end_turn_sees_each_finished_turn_and_barge_in_spares_finished_ones():
    class Joiner(Stage):
        """Buffers a turn's words and says them at the end of the turn, as TTS does with the last sentence."""

        name = "joiner"

        def __init__(self):
            self.words = {}

        def process(self, value, ctx):
            self.words.setdefault(ctx.turn, []).append(value)
            return ()

        def end_turn(self, ctx):
            yield " ".join(self.words.pop(ctx.turn))

    opener = FunctionStage("split", lambda text: iter(text.split()))

    class Turns(Stage):
        name = "turns"

        def process(self, value, ctx):
            ctx.new_turn()
            yield value

    pipe = Pipeline([Turns(), opener, Joiner()])
    events = list(pipe.run(["hello big world", "second one"]))
    assert [(e.turn, e.value) for e in events if e.kind == "output"] == [(1, "hello big world"), (2, "second one")]
    assert [e.turn for e in events if e.kind == "turn_end"] == [1, 2]
    assert pipe.cancel() == []  # both finished: nothing in flight to cancel
    assert not any(t.cancelled for t in pipe.report().turns)
