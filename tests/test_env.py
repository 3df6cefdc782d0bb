"""edgesdk._env: every variable in one table, each parser's values and errors."""

import logging
import re
from pathlib import Path

import pytest

from edgesdk import _cache, _env

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("edgesdk", "backends", "plugins", "samples")


def _names_in_source() -> set[str]:
    found = set()
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            if "build" not in path.relative_to(ROOT).parts:
                found |= set(re.findall(r"\bEDGESDK_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8")))
    return found


def test_table_lists_every_variable_the_source_names():
    assert _names_in_source() - set(_env.VARIABLES) == set()
    table = _env.markdown_table()
    for name, var in _env.VARIABLES.items():
        assert f"| `{name}` | {var.kind}" in table and var.meaning in table


def test_no_module_reads_os_environ_for_edgesdk_variables():
    # reads go through _env.get so the table stays complete; a configurable key name is the exception
    direct = re.compile(r"os\.environ(\.get)?\s*[\[(]\s*['\"]EDGESDK_")
    offenders = [str(p.relative_to(ROOT)) for folder in SOURCES for p in (ROOT / folder).rglob("*.py") if direct.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_unset_and_blank_give_the_default(monkeypatch):
    for name, var in _env.VARIABLES.items():
        monkeypatch.delenv(name, raising=False)
        assert _env.get(name) == var.default
        monkeypatch.setenv(name, "  ")
        assert _env.get(name) == var.default


@pytest.mark.parametrize("text,value", [("4", 4), (" 7 ", 7), ("0", 1), ("-5", 1)])
def test_int_is_clamped_to_its_bounds(monkeypatch, text, value):
    monkeypatch.setenv("EDGESDK_THREADS", text)
    assert _env.get("EDGESDK_THREADS") == value


@pytest.mark.parametrize(
    "name,text", [("EDGESDK_THREADS", "y"), ("EDGESDK_THREADS", "1e3"), ("EDGESDK_LLM_DECODE_THREADS", "abc"), ("EDGESDK_LLM_DECODE_THREADS", "2.5")]
)
def test_bad_int_warns_with_name_value_and_expectation(monkeypatch, caplog, name, text):
    monkeypatch.setenv(name, text)
    with caplog.at_level(logging.WARNING, logger="edgesdk.env"):
        assert _env.get(name) is None  # the default: measured / the CPU count
    assert f"{name}={text!r} is not an integer; using the default" in caplog.text


def test_decode_threads_bounds(monkeypatch):
    for text, value in (("99999999", 256), ("-3", 0), ("8", 8)):
        monkeypatch.setenv("EDGESDK_LLM_DECODE_THREADS", text)
        assert _env.get("EDGESDK_LLM_DECODE_THREADS") == value


@pytest.mark.parametrize("text,value", [("numpy", "numpy"), (" C ", "c"), ("auto", "auto")])
def test_choice_is_case_insensitive(monkeypatch, text, value):
    monkeypatch.setenv("EDGESDK_KERNELS", text)
    assert _env.get("EDGESDK_KERNELS") == value


def test_bad_choice_warns_and_falls_back(monkeypatch, caplog):
    monkeypatch.setenv("EDGESDK_RESAMPLER", "fastest")
    with caplog.at_level(logging.WARNING, logger="edgesdk.env"):
        assert _env.get("EDGESDK_RESAMPLER") == "auto"
    assert "EDGESDK_RESAMPLER='fastest' is not one of auto, soxr, numpy; using 'auto'" in caplog.text


def test_deprecated_kernels_alias_means_c(monkeypatch, caplog):
    monkeypatch.setenv("EDGESDK_KERNELS", "kernels")
    with caplog.at_level(logging.WARNING, logger="edgesdk.env"):
        assert _env.get("EDGESDK_KERNELS") == "c"
    assert "EDGESDK_KERNELS='kernels' is deprecated; use EDGESDK_KERNELS=c" in caplog.text


@pytest.mark.parametrize(
    "text,value", [("1", True), ("TRUE", True), ("yes", True), ("on", True), ("0", False), ("false", False), ("No", False), ("off", False)]
)
def test_flag_words(monkeypatch, text, value):
    monkeypatch.setenv("EDGESDK_LLM_FUSED", text)
    assert _env.get("EDGESDK_LLM_FUSED") is value


def test_bad_flag_warns_and_keeps_each_variables_meaning(monkeypatch, caplog):
    monkeypatch.setenv("EDGESDK_LLM_FUSED", "maybe")
    monkeypatch.setenv("EDGESDK_DISABLE_PLUGIN_AUTOLOAD", "please")
    with caplog.at_level(logging.WARNING, logger="edgesdk.env"):
        assert _env.get("EDGESDK_LLM_FUSED") is True  # only an explicit "off" turns the fused loop off
        assert _env.get("EDGESDK_DISABLE_PLUGIN_AUTOLOAD") is True  # any other text means "set", as in pytest
    assert "EDGESDK_LLM_FUSED='maybe' is not a flag" in caplog.text
    assert "EDGESDK_DISABLE_PLUGIN_AUTOLOAD='please' is not a flag" in caplog.text


def test_list_drops_blanks(monkeypatch):
    monkeypatch.setenv("EDGESDK_PLUGINS", " a, ,b.c ,")
    assert _env.get("EDGESDK_PLUGINS") == ("a", "b.c")


@pytest.mark.parametrize("text", ["lots", "-1", "nan", "inf"])
def test_bad_size_is_an_error_of_the_callers_type(monkeypatch, text):
    monkeypatch.setenv("EDGESDK_CACHE_MAX_MB", text)
    with pytest.raises(_env.EnvError, match=rf"EDGESDK_CACHE_MAX_MB={re.escape(repr(text))} is not a size in MiB"):
        _env.get("EDGESDK_CACHE_MAX_MB")
    with pytest.raises(_cache.CacheConfigError):
        _cache.max_bytes()
    assert issubclass(_env.EnvError, ValueError)


def test_size_values(monkeypatch):
    monkeypatch.setenv("EDGESDK_CACHE_MAX_MB", "0.5")
    assert _cache.max_bytes() == 1 << 19
    monkeypatch.setenv("EDGESDK_CACHE_MAX_MB", "0")
    assert _cache.max_bytes() is None


def test_unknown_name_is_a_programming_error():
    with pytest.raises(KeyError):
        _env.get("EDGESDK_NOT_IN_THE_TABLE")


def test_c_kernels_have_one_name():
    import warnings

    from edgesdk import kernels
    from edgesdk.llm._weights import check_impl, kernel_impl

    assert kernel_impl() == ("c" if kernels.available() else "numpy") == kernels.info().impl
    assert check_impl("c") == "c" and check_impl("numpy") == "numpy" and check_impl(None) is None
    with pytest.warns(DeprecationWarning, match="impl='kernels' is deprecated; use impl='c'"):
        assert check_impl("kernels") == "c"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(Exception, match="impl must be 'numpy' or 'c', got 'gpu'"):
            check_impl("gpu")
