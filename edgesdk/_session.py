"""The Session: load a model, place it, validate inputs, run it."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Iterator, Mapping, Sequence

import numpy as np

from . import hub
from ._errors import EdgeSDKError, InputNameError, PluginError
from ._modelfile import open_model
from ._options import SessionOptions
from ._plan import place
from ._registry import get_registry
from ._validate import InputValidator
from .backend import GenerativeRunner, Model, TensorSpec, missing_generative

__all__ = ["Session"]

log = logging.getLogger("edgesdk.session")


class Session:
    """A model placed on a device.

    ``Session(path)`` (or ``Session("hub:<name>")`` for a model of :mod:`edgesdk.hub`) validates the file, asks every installed backend, loads the model on the best
    device allowed by ``options`` and reports the decision in :attr:`placement`. :meth:`run` is safe
    to call from several threads at once (backends whose runtime is not re-entrant serialise
    internally). Use it as a context manager, or call :meth:`close`, to free native memory early.
    """

    def __init__(self, model, options: SessionOptions | None = None, **overrides):
        if options is None:
            options = SessionOptions(**overrides)
        elif overrides:
            import attrs

            options = attrs.evolve(options, **overrides)
        if not isinstance(options, SessionOptions):
            raise TypeError(f"options must be an edgesdk.SessionOptions, got {type(options).__name__}")
        if not isinstance(model, (str, os.PathLike)):
            raise TypeError(f"model must be a path (str or os.PathLike), got {type(model).__name__}")
        self.options = options
        registry = get_registry()
        if isinstance(model, str) and model.startswith(("hub:", "hf:")):  # hf: a file in the local Hugging Face cache
            model = hub.resolve(model)
        self.model: Model = open_model(model, registry)
        self._runner, self.placement = place(self.model, options, registry)
        self._generator = _generator_of(self._runner, self.placement.backend)
        self._validate = InputValidator(self._runner.inputs)
        self._run = self._runner.run
        self._output_names = frozenset(o.name for o in self._runner.outputs)
        self._closed = False
        self._calls = 0  # run()/generate() calls and stream steps in flight: close() waits for them
        self._idle = threading.Condition()
        registry.call_observers("edgesdk_session_created", session=self)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The model's inputs: names, shapes (symbolic dims as strings), dtypes, and the kind of non-tensor ones."""
        return self._runner.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._runner.outputs

    @property
    def device(self):
        return self.placement.device

    @property
    def runner(self):
        """The backend's runner (backend-specific extras live here)."""
        return self._runner

    def run(self, feeds: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run the model on ``feeds`` (name -> array); returns name -> array for ``output_names`` or all outputs.

        ONNX sequence inputs take a list of arrays and optional ones also None; outputs of those
        kinds come back the same way (a list of arrays, None for an empty optional).
        """
        with self._call():
            feeds = self._validate(feeds)
            if output_names is not None:
                unknown = [n for n in output_names if n not in self._output_names]
                if unknown:
                    raise InputNameError(f"unknown output name(s) {unknown}; outputs are {sorted(self._output_names)}")
            return self._run(feeds, output_names)

    def generate(self, prompt, **kwargs) -> str:
        """Generate text from a prompt string or a chat (list of {"role", "content"} dicts)."""
        with self._call():
            return self._generative().generate(prompt, **kwargs)

    def generate_stream(self, prompt, **kwargs) -> Iterator[str]:
        """Like :meth:`generate`, yielding text pieces as they are decoded; close the iterator to cancel."""
        with self._call():
            return _GuardedStream(self, self._generative().generate_stream(prompt, **kwargs))

    def op_times(self):
        """Per-node times from the runtime's profiler since load (a tuple of :class:`edgesdk.backend.OpTime`),
        when the session was made with ``SessionOptions(profile=True)`` on a backend that reports
        them; None otherwise (``session.runner.op_times_note`` says why). On ONNX Runtime backends the
        first call ends the profile (ORT cannot restart it): later runs are not counted, and later calls
        return the same totals, so read it once, after the runs of interest."""
        with self._call():
            fn = getattr(self._runner, "op_times", None)
            return fn() if fn is not None else None

    def _generative(self) -> GenerativeRunner:
        if self._closed:
            raise EdgeSDKError("session is closed")
        if self._generator is None:
            raise EdgeSDKError(f"{self.model.path} is not a generative model on backend {self.placement.backend!r}; use run()")
        return self._generator

    @contextlib.contextmanager
    def _call(self):
        """Count a call in flight; refused once the session is closed."""
        with self._idle:
            if self._closed:
                raise EdgeSDKError("session is closed")
            self._calls += 1
        try:
            yield
        finally:
            with self._idle:
                self._calls -= 1
                self._idle.notify_all()

    def close(self) -> None:
        """Free the model. Calls already running finish first (freeing native buffers under them
        would crash); later calls, and the next step of an open stream, raise EdgeSDKError."""
        with self._idle:
            if self._closed:
                return
            self._closed = True
            self._idle.wait_for(lambda: self._calls == 0)
        self._runner.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"<edgesdk.Session {os.path.basename(self.model.path)!r} on {self.placement.device.id}>"


class _GuardedStream:
    """A runner's text stream whose every step counts as a call of its session, so close() waits
    for a step being decoded and the steps after it raise; other attributes (``reply``, ``stats``)
    pass through."""

    def __init__(self, session: Session, inner):
        self._session, self._inner = session, inner

    def __iter__(self):
        return self

    def __next__(self) -> str:
        try:
            with self._session._call():
                return next(self._inner)
        except EdgeSDKError:
            self.close()  # the suspended stream holds the model's generation lock: release it
            raise

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()

    def __getattr__(self, name):
        return getattr(self._inner, name)


def _generator_of(runner, backend: str) -> GenerativeRunner | None:
    """``runner`` when it is generative, None when it does not claim to be; PluginError when it half is.

    Checked at load so a backend missing part of the contract fails here, naming what it lacks,
    not at the first call of the missing method. The runner is closed before raising: the
    Session that would have owned it does not exist.
    """
    missing = missing_generative(runner)
    if not missing:
        return None if missing is None else runner
    runner.close()
    raise PluginError(
        f"backend {backend!r} returned a generative runner ({type(runner).__name__}) lacking {', '.join(missing)} of edgesdk.backend.GenerativeRunner"
    )
