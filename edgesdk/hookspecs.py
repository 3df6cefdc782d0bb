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
