"""The gevent worker's monkey-patching: ssl patched on first import, plugins found without importlib.metadata.

Each check runs in a fresh interpreter: the test process itself may already have imported ssl or
importlib.metadata, which would send patch() down its eager path.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest

from forkserve.workers.gevent_patch import load_entry_point, plugin_entry_points
from tests.workers.conftest import read_responses

GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def run_python(code: str, *path: Path) -> str:
    """Run `code` after putting `path` first on sys.path; returns stdout (fails the test on a non-zero exit)."""
    prefix = "import sys\nsys.path[:0] = %r\n" % [str(p) for p in path]
    done = subprocess.run([sys.executable, "-W", "error::Warning", "-c", prefix + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_prepare_defers_ssl_and_skips_importlib_metadata() -> None:
    out = run_python("""
        from forkserve.workers.gevent_patch import patch
        patch()
        print("ssl" in sys.modules, "importlib.metadata" in sys.modules)
        from gevent import monkey
        print(monkey.is_module_patched("socket"), monkey.is_module_patched("ssl"))
    """)
    assert out.split() == ["False", "False", "True", "False"]


def test_ssl_is_patched_before_the_importer_sees_it() -> None:
    out = run_python("""
        from forkserve.workers.gevent_patch import patch
        patch()
        from ssl import SSLContext, SSLSocket  # the names a module binds at import time
        import gevent.ssl, ssl, http.client
        from gevent import monkey
        print(monkey.is_module_patched("ssl"), SSLContext is gevent.ssl.SSLContext,
              SSLSocket is gevent.ssl.SSLSocket, http.client.ssl.SSLContext is gevent.ssl.SSLContext)
        monkey.patch_all()  # an app patching again: a silent no-op (-W error turns a warning into a failure)
        print(any(type(f).__name__ == "_PatchSslOnImport" for f in sys.meta_path))
    """)
    assert out.split() == ["True", "True", "True", "True", "False"]


def test_ssl_imported_before_prepare_is_patched_at_once() -> None:
    out = run_python("""
        import warnings
        import ssl
        from forkserve.workers.gevent_patch import patch
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gevent's own "ssl already imported" warning: expected here
            patch()
        from gevent import monkey
        import gevent.ssl
        print(monkey.is_module_patched("ssl"), ssl.SSLContext is gevent.ssl.SSLContext)
    """)
    assert out.split() == ["True", "True"]


def test_app_importing_gevent_ssl_first_still_gets_ssl_patched() -> None:
    out = run_python("""
        from forkserve.workers.gevent_patch import patch, patch_ssl_if_imported
        patch()
        import gevent.ssl  # imports ssl from inside gevent.ssl: the hook leaves it to serve()
        patch_ssl_if_imported()
        import ssl
        from gevent import monkey
        print(monkey.is_module_patched("ssl"), ssl.SSLContext is gevent.ssl.SSLContext)
    """)
    assert out.split() == ["True", "True"]


def write_plugin(root: Path, dist: str = "fake_plugin-1.0") -> None:
    info = root / f"{dist}.dist-info"
    info.mkdir(parents=True)
    (info / "entry_points.txt").write_text(textwrap.dedent("""
        [console_scripts]
        fake = fakeplugin:main

        # a comment
        [gevent.plugins.monkey.will_patch_all]
        fake = fakeplugin:Hooks.will_patch_all [extra]

        [gevent.plugins.monkey.did_patch_all]
        fake = fakeplugin:did_patch_all
    """))
    (root / "fakeplugin.py").write_text(textwrap.dedent("""
        calls = []

        class Hooks:
            @staticmethod
            def will_patch_all(event):
                calls.append("will")

        def did_patch_all(event):
            calls.append("did")
    """))


def test_plugins_are_called_as_gevent_would(tmp_path: Path) -> None:
    write_plugin(tmp_path)
    out = run_python("""
        from forkserve.workers.gevent_patch import patch
        patch()
        import fakeplugin
        print(",".join(fakeplugin.calls), "importlib.metadata" in sys.modules)
    """, tmp_path)
    assert out.split() == ["will,did", "False"]


def test_plugin_scan_matches_importlib_metadata(tmp_path: Path) -> None:
    write_plugin(tmp_path / "a")
    write_plugin(tmp_path / "b", "Fake.Plugin-2.0")  # the same distribution later on the path: shadowed
    (tmp_path / "a" / "other-1.0.dist-info").mkdir()  # no entry_points.txt
    path = [str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "missing"), *sys.path]
    found = plugin_entry_points(path)
    out = run_python("""
        from importlib import metadata
        import gevent.events
        # what gevent asks importlib.metadata for: entry_points(group=...) of each event's group
        names = {getattr(c, "ENTRY_POINT_NAME", None) for c in vars(gevent.events).values()} - {None}
        groups = {g: [ep.value for ep in metadata.entry_points(group=g)] for g in names}
        print(sorted((g, sorted(v)) for g, v in groups.items() if v))
    """, tmp_path / "a", tmp_path / "b", tmp_path / "missing")
    assert found is not None
    assert repr(sorted((g, sorted(v)) for g, v in found.items())) == out.strip()
    assert found["gevent.plugins.monkey.will_patch_all"].count("fakeplugin:Hooks.will_patch_all [extra]") == 1


def test_plugin_scan_defers_to_importlib_metadata_for_zips_and_eggs(tmp_path: Path) -> None:
    archive = tmp_path / "lib.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("x.py", "")
    assert plugin_entry_points([str(archive)]) is None
    (tmp_path / "old.egg").mkdir()
    assert plugin_entry_points([str(tmp_path / "old.egg")]) is None
    assert plugin_entry_points([str(tmp_path)]) == {}


def test_load_entry_point() -> None:
    assert load_entry_point("os.path:join") is __import__("os").path.join
    assert load_entry_point("os.path") is __import__("os").path
    with pytest.raises(ValueError):
        load_entry_point("not valid!")


def test_gevent_worker_app_using_ssl_gets_the_cooperative_module(start_worker: Any) -> None:
    worker = start_worker(worker_class="gevent", module="wapps:ssl_patched")
    with worker.connect() as sock:
        sock.sendall(GET)
        assert read_responses(sock)[0].body == b"True True"
