"""``edgesdk quantize --to TYPE`` draws a progress bar over the tensors on a terminal, never in a pipe."""

from __future__ import annotations

import functools
import io

import pytest

from edgesdk import _progress
from edgesdk.cli import main
from edgesdk.quant import quantize_gguf


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    from test_architectures import write_model

    return write_model(tmp_path_factory.mktemp("qp") / "llama-2.gguf", "llama", layers=2, types={})


def test_progress_counts_every_tensor_then_reports_the_end(gguf, tmp_path):
    calls = []
    report = quantize_gguf(gguf, tmp_path / "o.gguf", "Q8_0", progress=lambda i, n, name: calls.append((i, n, name)))
    n = len(report.tensors)
    assert [c[0] for c in calls] == list(range(n + 1)) and {c[1] for c in calls} == {n}
    assert [c[2] for c in calls[:-1]] == [t.name for t in report.tensors] and calls[-1][2] == ""


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("stream,argv,shown", [(Terminal(), [], True), (io.StringIO(), [], False), (Terminal(), ["-q"], False)])
def test_the_bar_shows_only_on_a_terminal(gguf, tmp_path, monkeypatch, capsys, stream, argv, shown):
    monkeypatch.setattr(_progress, "bar", functools.partial(_progress.bar, delay=0))  # the model takes well under 1 s
    monkeypatch.setattr("sys.stderr", stream)
    try:
        assert main([*argv, "quantize", "--to", "q8_0", gguf, str(tmp_path / "o.gguf")]) == 0
    finally:
        _progress.set_enabled(True)
    text = stream.getvalue()
    assert ("quantizing to Q8_0" in text) == shown
    assert ("tensor" in text) == shown
    assert "Q8_0" in capsys.readouterr().out  # the report is on stdout either way
