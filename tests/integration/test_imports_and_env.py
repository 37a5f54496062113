"""Where `forkserve up` imports an app from, and the environment it gets: real masters started the way people
start them (the `forkserve` console script, in a directory of their choosing).

- A module next to the site file with no `chdir`, `up` started in that directory: the workers import it (the
  start directory is on sys.path, as in gunicorn), and `check --import` agrees. Before, the master's sys.path[0]
  was the script's directory, and the workers crash-looped with ModuleNotFoundError while check said OK.
- A module importable only from elsewhere: `up` and `check --import` both fail, with the same exception.
- `${VAR}` and `env_file`: the workers see the values; the master's log, `status` and `plan` never show them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers import wait_until
from tests.integration.conftest import Site, boot_failure, get

SCRIPT = Path(sys.executable).with_name("forkserve")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-P", "-m", "forkserve"]  # -P: like a script

APP = """\
import os

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    names = environ.get("QUERY_STRING", "").split(",")
    return [("here " + " ".join(os.environ.get(n, "-") for n in names if n)).encode()]
"""


class StartedIn(Site):
    """A site whose master is the console script, started in `cwd` with extra environment variables."""

    def __init__(self, *args: Any, cwd: Path, env: dict[str, str] | None = None) -> None:
        super().__init__(*args)
        self.cwd, self.env = cwd, {**os.environ, **(env or {})}

    def start(self, wait_ready: bool = True) -> Site:
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([*COMMAND, "up", str(self.path)], cwd=self.cwd, env=self.env,
                                     stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True)
        if wait_ready:
            wait_until(lambda: "workers ready" in self.log(), what="the first app to be ready")
        return self

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*COMMAND, *args], cwd=self.cwd, env=self.env, capture_output=True, text=True,
                              timeout=60, check=False)


SITE = """
[apps.web]
module = "{module}:app"
binds = ["127.0.0.1:0"]
workers = 1
{extra}
"""


def test_a_module_next_to_the_site_file_imports_with_no_chdir(site_factory, tmp_path: Path) -> None:
    (tmp_path / "wsgi_here.py").write_text(APP)
    site = site_factory(SITE.format(module="wsgi_here", extra=""), site_class=StartedIn, cwd=tmp_path).start()
    assert get(site.address("web"))[1].startswith("here")
    checked = site.cli("check", "--import", "site.toml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "wsgi_here:app imports and is callable" in checked.stdout


def test_a_module_importable_only_from_elsewhere_fails_both_with_the_same_message(site_factory,
                                                                                   tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "only_in_lib.py").write_text(APP)
    site = site_factory(SITE.format(module="only_in_lib", extra=""), site_class=StartedIn, cwd=tmp_path,
                        expect=boot_failure("web")).start(wait_ready=False)
    message = "ModuleNotFoundError: No module named 'only_in_lib'"
    wait_until(lambda: "app web: boot failed:" in site.log(), what="the boot failure")
    assert message in site.log()
    checked = site.cli("check", "--import", "site.toml")
    assert checked.returncode == 1
    assert message in checked.stdout
    # with the directory on pythonpath, both import it
    site.write(SITE.format(module="only_in_lib", extra='pythonpath = ["lib"]'))
    assert site.cli("check", "--import", "site.toml").returncode == 0
    wait_until(lambda: site.ready("web", 1), timeout=30, what="web ready once pythonpath names lib")


def test_variables_and_env_files_reach_the_workers_and_never_the_logs(site_factory, tmp_path: Path) -> None:
    (tmp_path / "wsgi_env.py").write_text(APP)
    (tmp_path / "app.env").write_text("# secrets\nexport FROM_FILE='file-secret-4711'\nOVERRIDDEN=from-file\n")
    extra = ('env_file = "app.env"\n'
             'env = { DB_URL = "postgres://u:${DB_PASSWORD}@db/x", OVERRIDDEN = "from-env", '
             'MODE = "${MODE:-plain}", PRICE = "$$5" }')
    site = site_factory(SITE.format(module="wsgi_env", extra=extra), site_class=StartedIn, cwd=tmp_path,
                        env={"DB_PASSWORD": "pw-secret-0815"}).start()
    address = site.address("web")
    body = get(address, "/?DB_URL,FROM_FILE,OVERRIDDEN,MODE,PRICE")[1]
    assert body == "here postgres://u:pw-secret-0815@db/x file-secret-4711 from-env plain $5"
    (tmp_path / "app.env").write_text("export FROM_FILE='file-secret-4712'\nOVERRIDDEN=from-file\n")
    site.write(SITE.format(module="wsgi_env", extra=extra) + "# touched: the watcher reloads\n")
    wait_until(lambda: "file-secret-4712" in get(address, "/?FROM_FILE")[1], timeout=30,
               what="the env_file change rolled the app")
    status = site.cli("status", "site.toml", "--json")
    planned = site.cli("plan", "site.toml")
    shown = site.log() + status.stdout + status.stderr + planned.stdout + planned.stderr
    for secret in ("pw-secret-0815", "file-secret-4711", "file-secret-4712"):
        assert secret not in shown
    assert "env changed: FROM_FILE" in site.log()
    assert json.loads(status.stdout)  # status still answers


def test_an_unset_variable_is_a_located_error_of_up_and_check(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text(SITE.format(module="m", extra='env = { A = "${FORKSERVE_TEST_UNSET}" }'))
    env = {k: v for k, v in os.environ.items() if k != "FORKSERVE_TEST_UNSET"}
    for command in (["check", "site.toml"], ["up", "site.toml"]):
        done = subprocess.run([*COMMAND, *command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == (1 if command[0] == "check" else 3)
        assert ("site.toml:6:9: apps.web.env.A: environment variable FORKSERVE_TEST_UNSET is not set"
                in done.stdout + done.stderr)
