"""Every pluggy hook edgesdk calls. The docstring of each hook is its contract.

Plugin authors decorate implementations with :data:`edgesdk.hookimpl` and expose their module
through the ``edgesdk.backends`` entry-point group.
"""

from __future__ import annotations

import pluggy

PROJECT = "edgesdk"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def edgesdk_backends():
    """Return a list of :class:`edgesdk.backend.Backend` instances this plugin provides.

    Called once when the plugin registry starts. Must be cheap and must not touch hardware:
    device discovery happens later in ``Backend.probe``. Each backend declares ``api_version``;
    a value other than :data:`edgesdk.backend.BACKEND_API_VERSION` is refused with a clear message.
    An exception raised here is reported by ``edgesdk devices`` and the plugin is skipped.
    """


@hookspec(firstresult=True)
def edgesdk_detect_format(path, head):
    """Return a format name for a model file edgesdk's own probes do not recognise, else None.

    ``path`` is a :class:`pathlib.Path` (a file or a directory); ``head`` holds up to the first
    64 bytes of a file (empty for a directory). Lets a plugin bring a new model format (for
    example a CTranslate2 model directory) without changing edgesdk. The first non-None wins.
    """


@hookspec
def edgesdk_session_created(session):
    """Called after a :class:`edgesdk.Session` is placed and loaded; observe only, do not mutate.

    Useful for telemetry or logging of ``session.placement``. Exceptions are logged and ignored.
    """


@hookspec
def edgesdk_cli_commands(subparsers, add_placement_args, options_fn):
    """Add sub-commands to the ``edgesdk`` command line; called once while the parser is built.

    ``subparsers`` is the :mod:`argparse` sub-parser action: ``p = subparsers.add_parser(name)``.
    Give each parser ``p.set_defaults(fn=callable(args) -> exit status)``. ``add_placement_args(p)``
    adds the usual ``--prefer/--require/--threads/--device-class`` flags and ``options_fn(args)``
    turns them into a :class:`edgesdk.SessionOptions`. Raise :class:`edgesdk.errors.EdgeSDKError`
    subclasses for user errors: the CLI prints them as ``error: ...`` and exits 1. Plugins are called
    after the built-in commands exist, so taking a built-in name fails (argparse refuses it); that or
    any other exception raised here is logged, never fatal, and the rest of the command line works.
    """


@hookspec
def edgesdk_quantize_targets():
    """Return a list of :class:`edgesdk.quant.cli.QuantizeTarget` objects: the ``--for NAME`` modes
    of ``edgesdk quantize`` this plugin provides (e.g. the qnn backend's ``--for npu``).

    Called while the command line is built. Each target adds its own argument group; the options in
    it are refused by name when given with another mode (``--to TYPE`` or another ``--for``).
    A target whose name is already taken, or an exception raised here, is logged and skipped.
    """


@hookspec
def edgesdk_hub_models():
    """Return a list of :class:`edgesdk.hub.HubModel` entries this plugin adds to the hub catalogue
    (``edgesdk.hub.CATALOG``, ``edgesdk hub list``, ``Session("hub:NAME")`` and every command that takes a
    model), e.g. the models its backend runs (the ctranslate2 plugin adds ``whisper-tiny-en``).

    Called lazily, on the first read of the catalogue after the plugin registry is built (again when it is
    rebuilt), never at import time. Must be cheap: build the entries, do not look for their files
    (:func:`edgesdk.hub.path` finds them later through each entry's ``module`` and ``relpath``); while this
    runs, ``edgesdk.hub.CATALOG`` holds the built-in entries only. An entry whose name is a built-in hub
    model or one an earlier plugin added, anything that is not a ``HubModel``, and an exception raised
    here (the plugin then adds nothing) are logged and skipped. Implement it with
    ``@edgesdk.hookimpl(optionalhook=True)`` to keep the plugin loadable by an edgesdk without this hook.
    """
