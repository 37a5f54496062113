"""`forkserve check FILE...`: validate site files, report every problem, exit 0 (all valid), 1 (some invalid or
an app did not import), 2 (a file could not be read).

Formats: `text` (one `FILE:LINE:COL: key.path: message` per problem), `json` (one document for tools) and
`github` (`::error file=F,line=L,col=C::message` workflow annotations).

`--import` is the only place app code runs, and never in this process: each app is imported in a throwaway
`python -c` subprocess exactly as a worker of `forkserve up` started in the same directory would: the same
directory and sys.path entries in the same order (`spec.import_paths`, the one rule both use), and the same
environment (the app's `env`, its env_file's variables and `${VAR}` expanded). So when check says it imports,
`up` imports it; when it does not, both fail with the same exception.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TextIO

from forkserve.config.load import ConfigError, Diagnostic, load
from forkserve.config.paths import start_dir
from forkserve.spec import AppSpec, DesiredState, import_paths

IMPORT_TIMEOUT_CAP = 60.0
TRACEBACK_LINES = 8

# Runs in the throwaway subprocess: import the module, walk the attribute path, insist on a callable.
_IMPORT_SCRIPT = """\
import importlib, json, sys
spec, gevent = sys.argv[1], sys.argv[2] == "gevent"
if sys.path[:1] == [""]:  # `-c` puts the working directory first; the worker's entries replace it
    del sys.path[0]
sys.path[0:0] = json.loads(sys.argv[3])
if gevent:
    from gevent import monkey
    monkey.patch_all()
module_name, _, attrs = spec.partition(":")
obj = importlib.import_module(module_name)
for name in attrs.split("."):
    obj = getattr(obj, name)
if not callable(obj):
    sys.stderr.write(f"{spec} is {type(obj).__name__}, not a callable WSGI app\\n")
    sys.exit(3)
"""


@dataclass(frozen=True)
class ImportResult:
    app: str
    module: str
    ok: bool
    detail: str = ""  # the traceback tail when not ok


@dataclass
class FileReport:
    file: str
    diagnostics: list[Diagnostic] = field(default_factory=list)
    io_error: bool = False
    imports: list[ImportResult] = field(default_factory=list)
    apps: int = 0

    @property
    def valid(self) -> bool:
        return not self.diagnostics and all(r.ok for r in self.imports)


def check_file(path: str, do_import: bool = False) -> FileReport:
    """Load one file (and, when asked, import its apps in subprocesses)."""
    try:
        site = load(path)
    except ConfigError as err:
        return FileReport(path, err.diagnostics, err.io_error)
    report = FileReport(path, apps=len(site.apps))
    _warm_cache(path)
    if do_import:
        desired = DesiredState.from_config(site, start_dir())  # the specs `up` started here would run
        report.imports = [import_app(name, app) for name, app in desired.apps.items()]
    return report


def _warm_cache(path: str) -> None:
    """Leave the models' verdict in the cache of validated results (`config.cache`), exactly as `forkserve up`
    would, so that an `up` (or an upgrade, whose preflight is this check) run the same way by the same user then
    starts without the validating child. Best effort: the check's own verdict does not depend on it."""
    from forkserve.config.validate import read_site, validate

    absolute = os.path.abspath(path)
    data = read_site(absolute)
    if data is None:
        return
    with contextlib.suppress(Exception):
        validate(data, absolute).result()


def import_app(name: str, app: AppSpec) -> ImportResult:
    """Import `app.module` in a fresh interpreter the way a worker would; never in this process."""
    cwd, entries = import_paths(app)
    if cwd and not os.path.isdir(cwd):
        return ImportResult(name, app.module, False, f"chdir {cwd} is not a directory")
    argv = [sys.executable, "-c", _IMPORT_SCRIPT, app.module, app.worker_class, json.dumps(entries)]
    try:
        done = subprocess.run(
            argv, cwd=cwd or None, env={**os.environ, **dict(app.env)}, capture_output=True, text=True,
            timeout=min(app.boot_timeout, IMPORT_TIMEOUT_CAP), check=False,
        )
    except subprocess.TimeoutExpired:
        return ImportResult(name, app.module, False, f"import did not finish within {app.boot_timeout:g} seconds")
    except OSError as exc:
        return ImportResult(name, app.module, False, f"could not start Python: {exc}")
    if done.returncode == 0:
        return ImportResult(name, app.module, True)
    tail = "\n".join(done.stderr.strip().splitlines()[-TRACEBACK_LINES:])
    return ImportResult(name, app.module, False, tail or f"the import exited with status {done.returncode}")


def _text(reports: list[FileReport], out: TextIO) -> None:
    for report in reports:
        for diag in report.diagnostics:
            out.write(diag.format() + "\n")
        for result in report.imports:
            state = "imports and is callable" if result.ok else "does not import as a callable WSGI app"
            out.write(f"{report.file}: apps.{result.app}.module: {result.module} {state}\n")
            if not result.ok:
                out.write("".join(f"    {line}\n" for line in result.detail.splitlines()))
        if report.valid:
            out.write(f"{report.file}: ok ({report.apps} app{'s' if report.apps != 1 else ''})\n")


def _json(reports: list[FileReport], out: TextIO) -> None:
    files = [
        {
            "file": r.file,
            "valid": r.valid,
            "io_error": r.io_error,
            "diagnostics": [asdict(d) for d in r.diagnostics],
            "imports": [asdict(i) for i in r.imports],
        }
        for r in reports
    ]
    json.dump({"valid": all(r.valid for r in reports), "files": files}, out, indent=2)
    out.write("\n")


def _escape(text: str, prop: bool = False) -> str:
    """GitHub workflow-command escaping (properties also escape `:` and `,`)."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def _github(reports: list[FileReport], out: TextIO) -> None:
    for report in reports:
        for diag in report.diagnostics:
            props = [f"file={_escape(diag.file, True)}"]
            props += [f"line={diag.line}"] if diag.line is not None else []
            props += [f"col={diag.col}"] if diag.col is not None and diag.line is not None else []
            message = f"{diag.path}: {diag.message}" if diag.path else diag.message
            out.write(f"::error {','.join(props)}::{_escape(message)}\n")
        for result in report.imports:
            if not result.ok:
                message = f"apps.{result.app}.module: {result.module} does not import\n{result.detail}"
                out.write(f"::error file={_escape(report.file, True)}::{_escape(message)}\n")


_WRITERS = {"text": _text, "json": _json, "github": _github}


def exit_code(reports: list[FileReport]) -> int:
    if any(r.io_error for r in reports):
        return 2
    return 0 if all(r.valid for r in reports) else 1


def run_check(files: Sequence[str], fmt: str = "text", do_import: bool = False, out: TextIO | None = None) -> int:
    """Check every file, write the report in `fmt` to `out` (stdout), and return the exit code."""
    if fmt not in _WRITERS:
        (out or sys.stderr).write(f"forkserve check: unknown format {fmt!r}\n")
        return 2
    reports = [check_file(path, do_import) for path in files]
    _WRITERS[fmt](reports, out or sys.stdout)
    return exit_code(reports)
