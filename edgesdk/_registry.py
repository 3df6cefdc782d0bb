"""Plugin discovery: pluggy manager bootstrap, the ``edgesdk.backends`` entry-point group, device probing.

Environment variables (mirroring pytest's; parsed by :mod:`edgesdk._env`):
- ``EDGESDK_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry points except those named in ``EDGESDK_PLUGINS``.
- ``EDGESDK_PLUGINS=name,pkg.module``: plugins to load explicitly (entry-point names or module paths).
- ``EDGESDK_BLOCK_PLUGINS=name,...``: plugins (entry-point or backend names) never loaded.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import threading
from typing import Iterable

import attrs
import pluggy

from . import _env, hookspecs
from ._errors import BackendUnavailable, PluginError
from .backend import BACKEND_API_VERSION, Backend, Device

__all__ = ["Registry", "PluginStatus", "BackendStatus", "get_registry", "reset_registry", "ENTRY_POINT_GROUP"]

log = logging.getLogger("edgesdk.registry")

ENTRY_POINT_GROUP = "edgesdk.backends"


@attrs.frozen
class PluginStatus:
    """One plugin the registry tried to load; ``error`` says why it was skipped."""

    name: str
    source: str  # "entry-point <dist>", "EDGESDK_PLUGINS" or "register()"
    loaded: bool
    error: str | None = None


@attrs.frozen
class BackendStatus:
    """A backend and what its probe found: devices, or the reason it has none."""

    name: str
    version: str
    plugin: str
    devices: tuple[Device, ...]
    reason: str | None = None

    @property
    def available(self) -> bool:
        return bool(self.devices)


class Registry:
    """Loads plugins once, holds their backends, and probes each backend's devices once (lazily)."""

    def __init__(self, autoload: bool | None = None):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._lock = threading.RLock()
        self.plugins: list[PluginStatus] = []
        self._backends: dict[str, tuple[Backend, str]] = {}
        self._refused: list[BackendStatus] = []
        self._status: dict[str, BackendStatus] = {}
        self._blocked = set(_env.get("EDGESDK_BLOCK_PLUGINS"))
        if autoload is None:
            autoload = not _env.get("EDGESDK_DISABLE_PLUGIN_AUTOLOAD")
        self._load_plugins(autoload)

    # -- plugin loading -------------------------------------------------------------------------

    def _load_plugins(self, autoload: bool) -> None:
        explicit = _env.get("EDGESDK_PLUGINS")
        eps = {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
        names = list(eps) if autoload else []
        names += [n for n in explicit if n not in names]
        for name in names:
            if name in self._blocked:
                self.plugins.append(PluginStatus(name, "blocked", False, "blocked by EDGESDK_BLOCK_PLUGINS"))
                continue
            ep = eps.get(name)
            source = f"entry-point {ep.dist.name if ep and ep.dist else '?'}" if ep else "EDGESDK_PLUGINS"
            try:
                module = ep.load() if ep else importlib.import_module(name)
            except Exception as exc:  # a broken plugin must never break the SDK
                log.warning("plugin %s failed to import: %s: %s", name, type(exc).__name__, exc)
                self.plugins.append(PluginStatus(name, source, False, f"import failed: {type(exc).__name__}: {exc}"))
                continue
            self.register(module, name=name, source=source)

    def register(self, plugin, name: str | None = None, source: str = "register()") -> None:
        """Register a plugin object or module (anything with ``edgesdk_*`` hookimpls)."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        with self._lock:
            try:
                self.pm.register(plugin, name=name)
            except Exception as exc:
                self.plugins.append(PluginStatus(name, source, False, f"registration failed: {type(exc).__name__}: {exc}"))
                return
            problem = self._hook_problem()
            if problem:
                log.warning("plugin %s skipped: %s", name, problem)
                self.pm.unregister(plugin)
                self.plugins.append(PluginStatus(name, source, False, problem))
                return
            try:
                # Call this plugin's hook alone so one plugin's failure cannot hide another's backends.
                impls = [i for i in self.pm.hook.edgesdk_backends.get_hookimpls() if i.plugin is plugin]
                backends = [b for impl in impls for b in (impl.function() or [])]
                for backend in backends:
                    self._add_backend(backend, name)
            except Exception as exc:
                log.warning("plugin %s failed in edgesdk_backends: %s: %s", name, type(exc).__name__, exc)
                self.pm.unregister(plugin)
                self.plugins.append(PluginStatus(name, source, False, f"edgesdk_backends raised {type(exc).__name__}: {exc}"))
                return
            self.plugins.append(PluginStatus(name, source, True))

    def _hook_problem(self) -> str | None:
        """Why the plugin just registered implements a hook edgesdk does not have (a misspelt name), or None.

        Run after every registration, and a failing plugin is unregistered, so pluggy's
        ``check_pending`` (which covers every registered plugin) can only fail for the newest one.
        """
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            known = sorted(n for n in dir(hookspecs) if n.startswith(hookspecs.PROJECT + "_"))
            return f"hook validation failed: {exc} (edgesdk's hooks: {', '.join(known)})"
        return None

    def _add_backend(self, backend, plugin: str) -> None:
        if not isinstance(backend, Backend):
            raise PluginError(f"returned {backend!r}, which is not an edgesdk.backend.Backend")
        if not backend.name:
            raise PluginError(f"{type(backend).__name__} has no name")
        if backend.name in self._blocked:
            return
        version = getattr(backend, "version", "") or ""
        if backend.api_version != BACKEND_API_VERSION:
            reason = (
                f"backend API version {backend.api_version!r} is not supported by this edgesdk "
                f"(expects {BACKEND_API_VERSION}); upgrade the plugin or edgesdk so they match"
            )
            log.warning("backend %s refused: %s", backend.name, reason)
            self._refused.append(BackendStatus(backend.name, version, plugin, (), reason))
            return
        if backend.name in self._backends:
            raise PluginError(f"backend name {backend.name!r} is already provided by plugin {self._backends[backend.name][1]!r}")
        self._backends[backend.name] = (backend, plugin)

    # -- backends and devices -------------------------------------------------------------------

    def backend(self, name: str) -> Backend:
        try:
            return self._backends[name][0]
        except KeyError:
            raise PluginError(f"no backend named {name!r}; installed: {', '.join(self._backends) or 'none'}") from None

    def status(self, name: str) -> BackendStatus:
        """Probe ``name`` once and remember the answer."""
        with self._lock:
            if name in self._status:
                return self._status[name]
            backend, plugin = self._backends[name]
            try:
                devices = tuple(backend.probe() or ())
                bad = [d for d in devices if not isinstance(d, Device) or d.backend != name]
                if bad:
                    raise PluginError(f"probe returned devices not belonging to backend {name!r}: {bad!r}")
                reason = None if devices else "probe found no devices"
            except BackendUnavailable as exc:
                devices, reason = (), str(exc)
            except Exception as exc:
                log.warning("backend %s probe raised %s: %s", name, type(exc).__name__, exc)
                devices, reason = (), f"probe raised {type(exc).__name__}: {exc}"
            st = BackendStatus(name, getattr(backend, "version", "") or "", plugin, devices, reason)
            self._status[name] = st
            return st

    def refused(self) -> list[BackendStatus]:
        """Backends refused at registration (an API version this edgesdk does not support)."""
        return list(self._refused)

    def statuses(self) -> list[BackendStatus]:
        """Every backend: usable ones, ones with no devices (with the reason) and refused ones."""
        return [self.status(n) for n in self._backends] + list(self._refused)

    def devices(self) -> list[Device]:
        return [d for st in self.statuses() for d in st.devices]

    @property
    def backend_names(self) -> list[str]:
        return list(self._backends)

    def call_observers(self, hook: str, **kwargs) -> None:
        """Call an observe-only hook; a plugin raising is logged, never propagated."""
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            try:
                impl.function(**kwargs)
            except Exception as exc:
                log.warning("plugin %s raised in %s: %s: %s", impl.plugin_name, hook, type(exc).__name__, exc)

    # -- added for issue 18 (plugin CLI hooks): a list-returning hook, one plugin at a time ------
    def collect(self, hook: str, **kwargs) -> list:
        """The items every plugin's ``hook`` returns (a list each), in registration order; a plugin
        raising is logged and contributes nothing, so it cannot hide the others' items."""
        items = []
        for impl in getattr(self.pm.hook, hook).get_hookimpls():  # registration order: built-ins first
            try:
                items += list(impl.function(**kwargs) or ())
            except Exception as exc:
                log.warning("plugin %s raised in %s: %s: %s", impl.plugin_name, hook, type(exc).__name__, exc)
        return items

    def detect_format(self, path, head: bytes) -> str | None:
        for impl in reversed(self.pm.hook.edgesdk_detect_format.get_hookimpls()):
            try:
                fmt = impl.function(path=path, head=head)
            except Exception as exc:
                log.warning("plugin %s raised in edgesdk_detect_format: %s", impl.plugin_name, exc)
                continue
            if fmt:
                return str(fmt)
        return None


_registry: Registry | None = None
_registry_lock = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry, created on first use."""
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                _registry = Registry()
    return _registry


def reset_registry(plugins: Iterable = ()) -> Registry:
    """Rebuild the registry (re-reading the environment and entry points); extra ``plugins`` are registered."""
    global _registry
    with _registry_lock:
        _registry = Registry()
        for p in plugins:
            _registry.register(p)
    return _registry
