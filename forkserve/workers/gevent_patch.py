"""The gevent worker's monkey-patching: `patch_all()` as gunicorn's gevent worker does, lighter.

Kept apart from the serving loop (`forkserve.workers.gevent`) because it is a different job with a different
life: it runs once per process tree, before the app is imported (in a worker, or in the preload process whose
workers inherit it), while serving runs in every worker. Nothing here imports gevent at import time: the
master imports the gevent worker's modules before forking and must not load gevent.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import sys
from collections.abc import Sequence
from functools import reduce
from types import ModuleType
from typing import Any


def patch() -> None:
    """`monkey.patch_all()`, as gunicorn's gevent worker does, without two imports that most workers never need.

    A gunicorn worker inherits gevent, ssl and the rest from its master, which imported them; ours import them
    after fork, so every page they touch counts in the worker's RSS. Two of them are not needed to patch (figures
    from bench/worker_memory.py, hello app, one worker's RSS):
    * importlib.metadata (with email, zipfile, csv, ...; about 1.7 MB): gevent looks up its plugins' entry
      points at every patch event. We read the few entry_points.txt files ourselves (`plugin_entry_points`)
      and call the same plugins, falling back to gevent's lookup when the path holds anything but directories.
    * ssl (with libssl, _ssl and OpenSSL's initialisation; about 2.5 MB): patched the moment something first
      imports it (`_PatchSslOnImport`), before the importer sees the module, which is what gevent requires.
      An app that never uses TLS never loads it.

    Call it once per process tree, before the app is imported: a second call would patch again (gevent warns
    "Patching more than once") and stack a second ssl hook. A worker forked from the preload process inherits
    the patched modules and must not call it.
    """
    from gevent import events, monkey

    plugins = plugin_entry_points(sys.path)
    if plugins is not None and hasattr(events, "notify_and_call_entry_points"):
        events.notify_and_call_entry_points = _PluginNotifier(events, plugins)
    if "ssl" in sys.modules:  # too late to defer: patch it now, with gevent's own warnings
        monkey.patch_all()
        return
    monkey.patch_all(ssl=False)
    # record ssl as patched, so that an app's own patch_all() stays the no-op it is after a full patch_all()
    # instead of warning "Patching more than once" and patching ssl behind our hook's back
    settings = monkey.saved.get("_gevent_saved_patch_all_module_settings")
    if isinstance(settings, dict) and settings.get("ssl") is False:
        settings["ssl"] = True
    sys.meta_path.insert(0, _PatchSslOnImport())


def patch_ssl_if_imported() -> None:
    """Patch ssl if it was imported without our hook seeing it (an app that imported gevent.ssl first)."""
    if "ssl" in sys.modules:
        _patch_ssl_once()


def _patch_ssl_once() -> None:
    from gevent import monkey

    if not monkey.is_module_patched("ssl"):
        monkey.patch_ssl()


_ENTRY_POINT = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$")
_PLUGIN_GROUP = "gevent.plugins."


def plugin_entry_points(path: Sequence[str]) -> dict[str, list[str]] | None:
    """gevent's plugins, {group: [entry point value, ...]}, read from the entry_points.txt of the distributions
    on `path` the way importlib.metadata finds them (*.dist-info and *.egg-info directories, the first
    distribution of a name wins, in path order). None when only importlib.metadata can tell: a path entry that
    is a file (zip, egg) or an .egg directory, or a meta path finder that serves distributions of its own."""
    for finder in sys.meta_path:
        if finder is not importlib.machinery.PathFinder and hasattr(finder, "find_distributions"):
            return None
    seen: set[str] = set()
    plugins: dict[str, list[str]] = {}
    for entry in path:
        root = entry or "."
        if root.endswith(".egg") or os.path.isfile(root):
            return None
        try:
            names = os.listdir(root)
        except OSError:
            continue  # a missing directory holds no distribution (importlib.metadata skips it too)
        for name in names:
            low = name.lower()
            if not low.endswith((".dist-info", ".egg-info")):
                continue
            dist = re.sub(r"[-_.]+", "_", low.rpartition(".")[0].partition("-")[0])
            if dist in seen:
                continue
            seen.add(dist)
            try:
                with open(os.path.join(root, name, "entry_points.txt"), encoding="utf-8") as f:
                    text = f.read()
            except OSError:
                continue  # no entry points (or an egg-info file rather than a directory)
            if _PLUGIN_GROUP in text:
                _parse_plugins(text, plugins)
    return plugins


def _parse_plugins(text: str, into: dict[str, list[str]]) -> None:
    group = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1].strip()
        elif group.startswith(_PLUGIN_GROUP) and "=" in line:
            into.setdefault(group, []).append(line.partition("=")[2].strip())


def load_entry_point(value: str) -> Any:
    """What importlib.metadata.EntryPoint(value=...).load() returns."""
    match = _ENTRY_POINT.match(value)
    if match is None:
        raise ValueError(f"malformed entry point: {value!r}")
    module = importlib.import_module(match["module"])
    return reduce(getattr, filter(None, (match["attr"] or "").split(".")), module)


class _PluginNotifier:
    """Stands in for gevent.events.notify_and_call_entry_points: the subscribers, then the plugins of the event's
    group, as gevent does, with the plugins read by `plugin_entry_points` instead of importlib.metadata."""

    def __init__(self, events: ModuleType, plugins: dict[str, list[str]]) -> None:
        self.events = events
        self.plugins = plugins

    def __call__(self, event: Any) -> None:
        self.events.notify(event)
        for value in self.plugins.get(getattr(event, "ENTRY_POINT_NAME", ""), ()):
            load_entry_point(value)(event)


class _PatchSslOnImport(importlib.abc.MetaPathFinder):
    """Finds ssl once (then leaves sys.meta_path): the stdlib module, whose loader patches it right after it ran,
    while the import that asked for it still waits, so no caller ever holds an unpatched ssl."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "ssl":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec("ssl")
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchAfterExec(spec.loader)
        return spec


class _PatchAfterExec(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        # gevent.ssl being imported means gevent is patching ssl already (or the app imported gevent.ssl
        # first: then the worker's serve() patches it before the first request)
        if "gevent.ssl" not in sys.modules:
            _patch_ssl_once()

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename, ... for tracebacks and inspect
        return getattr(self.loader, name)
