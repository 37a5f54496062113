"""`forkserve check`: exit codes, the three formats, --import in a subprocess, and the real command line."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from forkserve.config.check import run_check
from forkserve.config.paths import default_control_socket

ROOT = Path(__file__).resolve().parents[2]
GOOD = str(ROOT / "examples" / "configs" / "site.toml")
BAD_TEXT = '[apps.a]\nmodule = "a:b"\nbinds = ["a:1"]\nworkers = "2"\n'


def _run(files: list[str], fmt: str = "text", do_import: bool = False) -> tuple[int, str]:
    out = io.StringIO()
    code = run_check(files, fmt=fmt, do_import=do_import, out=out)
    return code, out.getvalue()


@pytest.fixture
def bad(tmp_path: Path) -> str:
    path = tmp_path / "bad.toml"
    path.write_text(BAD_TEXT)
    return str(path)


def test_exit_codes(bad: str, tmp_path: Path) -> None:
    assert _run([GOOD])[0] == 0
    assert _run([GOOD, bad])[0] == 1
    assert _run([GOOD, str(tmp_path / "missing.toml")])[0] == 2


def test_text_format(bad: str) -> None:
    _, text = _run([GOOD, bad])
    assert f"{GOOD}: ok (2 apps)" in text
    assert f'{bad}:4:1: apps.a.workers: expected an integer, found the string "2"; write 2 without quotes' in text


def test_json_format(bad: str) -> None:
    _, text = _run([bad], fmt="json")
    report = json.loads(text)
    assert report["valid"] is False
    [diag] = report["files"][0]["diagnostics"]
    assert (diag["line"], diag["col"], diag["path"]) == (4, 1, "apps.a.workers")


def test_github_format(bad: str) -> None:
    code, text = _run([bad], fmt="github")
    assert code == 1
    assert text == (f'::error file={bad},line=4,col=1::apps.a.workers: expected an integer, found the string "2"; '
                    "write 2 without quotes\n")


def test_import_reports_each_app(tmp_path: Path) -> None:
    app = "import os\ndef app(environ, start_response):\n    return [os.environ['X'].encode()]\n"
    (tmp_path / "good.py").write_text(app)
    (tmp_path / "broken.py").write_text("import nonexistent_module_forkserve\n")
    (tmp_path / "notcallable.py").write_text("app = 42\n")
    site = tmp_path / "site.toml"
    site.write_text(
        '[apps.good]\nmodule = "good:app"\nbinds = ["127.0.0.1:0"]\nchdir = "."\nenv = { X = "1" }\n'
        '[apps.broken]\nmodule = "broken:app"\nbinds = ["127.0.0.1:0"]\npythonpath = ["."]\n'
        '[apps.nc]\nmodule = "notcallable:app"\nbinds = ["127.0.0.1:0"]\nchdir = "."\n'
    )
    code, text = _run([str(site)], fmt="json", do_import=True)
    results = {r["app"]: r for r in json.loads(text)["files"][0]["imports"]}
    assert code == 1
    assert results["good"]["ok"] is True
    assert "ModuleNotFoundError: No module named 'nonexistent_module_forkserve'" in results["broken"]["detail"]
    assert "not a callable" in results["nc"]["detail"]


def test_command_line(bad: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "forkserve", "check", "--format", "text", GOOD, bad],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 1, done.stderr
    assert f"{bad}:4:1: apps.a.workers:" in done.stdout


def test_default_control_socket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    first = default_control_socket("site.toml")
    assert first.startswith(f"{tmp_path}/forkserve/") and first.endswith(".sock")
    assert len(Path(first).stem) == 16
    assert default_control_socket("other.toml") != first
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    import os

    assert default_control_socket("site.toml") == f"/tmp/forkserve-{os.getuid()}/{Path(first).name}"


def test_a_valid_file_checked_starts_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from forkserve.config.validate import Validated, read_site, validate

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "site.toml"
    path.write_text('[apps.a]\nmodule = "a:app"\nbinds = ["127.0.0.1:0"]\n')
    data = read_site(str(path))
    assert data is not None
    first = validate(data, str(path))
    assert not isinstance(first, Validated)  # never seen: a child would validate it
    first.cancel()
    assert _run([str(path)])[0] == 0
    assert isinstance(validate(data, str(path)), Validated)  # what `forkserve up` now finds
    (tmp_path / "bad.toml").write_text(BAD_TEXT)
    assert _run([str(tmp_path / "bad.toml")])[0] == 1  # an invalid file leaves nothing behind
    assert len(list((tmp_path / "cache" / "forkserve").iterdir())) == 1
