"""Table tests: one bad key per case, in TOML and in YAML, asserting the exact key path, line and words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from forkserve.config.load import ConfigError, load, load_text
from forkserve.config.source import parse

TOML_BASE = """\
[server]
log_level = "info"

[apps.api]
module = "api:app"
binds = ["127.0.0.1:8001"]
{extra}
"""
YAML_BASE = """\
server:
  log_level: info
apps:
  api:
    module: api:app
    binds: ["127.0.0.1:8001"]
{extra}
"""

# (TOML line 7 / YAML line 7 holds `extra`), expected path, expected words in the message
BAD = [
    ('workers = "4"', '    workers: "4"', "apps.api.workers", 'found the string "4"; write 4 without quotes'),
    ("workers = 4.0", "    workers: 4.0", "apps.api.workers", "found the number 4.0; write 4"),
    ("workers = true", "    workers: true", "apps.api.workers", "expected an integer, found the boolean true"),
    ("workers = 0", "    workers: 0", "apps.api.workers", "expected a value at least 1, found the integer 0"),
    ("workrs = 2", "    workrs: 2", "apps.api.workrs", "did you mean `workers`?"),
    ('worker_class = "gevnt"', "    worker_class: gevnt", "apps.api.worker_class", "did you mean `gevent`?"),
    ("timeout = nan", "    timeout: .nan", "apps.api.timeout", "nan"),
    ("timeout = 0", "    timeout: 0", "apps.api.timeout", "expected a value more than 0"),
    ("worker_connections = 10", "    worker_connections: 10", "apps.api.worker_connections", "applies only to"),
    ('max_surge = "x"', "    max_surge: x", "apps.api.max_surge", 'percentage like "25%", found the string "x"'),
    ("env = { A = 1 }", "    env: {A: 1}", "apps.api.env.A", 'expected a string, found the integer 1; write "1"'),
    ('env = { 1A = "x" }', "    env: {1A: x}", "apps.api.env.1A", "environment variable name"),
    ('pythonpath = "lib"', "    pythonpath: lib", "apps.api.pythonpath", 'write a list: ["lib"]'),
    ('unix_socket_mode = "777x"', '    unix_socket_mode: "777x"', "apps.api.unix_socket_mode", "octal"),
    ('forwarded_allow_ips = "*"', "    forwarded_allow_ips: '*'", "apps.api.forwarded_allow_ips",
     'write a list: ["*"]'),
    ('forwarded_allow_ips = ["10.0.0.0/33"]', "    forwarded_allow_ips: [10.0.0.0/33]",
     "apps.api.forwarded_allow_ips[0]", "is not an IP address, a CIDR network"),
    ("limit_request_body = -1", "    limit_request_body: -1", "apps.api.limit_request_body",
     "expected a value at least 0"),
]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _only_problem(path: Path) -> tuple[str, int | None, str]:
    with pytest.raises(ConfigError) as info:
        load(path)
    diagnostics = info.value.diagnostics
    assert len(diagnostics) == 1, str(info.value)
    return diagnostics[0].path, diagnostics[0].line, diagnostics[0].message


@pytest.mark.parametrize(("toml", "yaml", "key", "words"), BAD, ids=[row[2] + ":" + row[0] for row in BAD])
def test_bad_value_is_located_in_both_formats(tmp_path: Path, toml: str, yaml: str, key: str, words: str) -> None:
    for name, base, extra in (("site.toml", TOML_BASE, toml), ("site.yaml", YAML_BASE, yaml)):
        path, line, message = _only_problem(_write(tmp_path, name, base.format(extra=extra)))
        assert (path, line) == (key, 7), name
        assert words in message, f"{name}: {message}"


@pytest.mark.parametrize(
    ("name", "text", "key", "line", "words"),
    [
        ("s.toml", '[apps.api]\nbinds = ["a:1"]\n', "apps.api.module", 1, "required key `module` is missing"),
        ("s.yaml", "apps:\n  api:\n    binds: [a:1]\n", "apps.api.module", 2, "required key `module` is missing"),
        ("s.toml", '[apps.a]\nmodule = "a:b"\nbinds = ["a:1"]\n[servr]\n', "servr", 4, "did you mean `server`?"),
        ("s.yaml", "apps:\n  Api:\n    module: a:b\n    binds: [a:1]\n", "apps.Api", 2, 'app name "Api"'),
        ("s.toml", '[apps.a]\nmodule = "a:b"\nbinds = []\n', "apps.a.binds", 3, "at least 1 item"),
        ("s.toml", '[apps.a]\nmodule = "a:b()"\nbinds = ["a:1"]\n', "apps.a.module", 2, "dotted.module:attribute"),
        ("s.toml", '[apps.a]\nmodule = "a:_x"\nbinds = ["a:1"]\n', "apps.a.module", 2, "private"),
        ("s.yaml", "apps:\n  a:\n    module: a:b\n    binds:\n      - a:1\n      - 8000\n", "apps.a.binds[1]", 6,
         'write "8000" in quotes'),
        ("s.toml", '[apps.a]\nmodule = "a:b"\nbinds = [\n  "a:1",\n  "[::1:80",\n]\n', "apps.a.binds[1]", 5,
         "IPv6"),
        ("s.yaml", "apps:\n  a:\n    module: a:b\n    binds: [a:1]\n    workers: 010\n", "apps.a.workers", 5, "octal"),
        ("s.yaml", "apps:\n  a:\n    module: a:b\n    binds: [a:1]\n    timeout: 1:30\n", "apps.a.timeout", 5,
         "base-60"),
        ("s.yaml", "server:\n  access_log: off\napps:\n  a:\n    module: a:b\n    binds: [a:1]\n", "server.access_log",
         2, 'write "off" in quotes'),
        ("s.yaml", "apps:\n  a:\n    module: a:b\n    binds: [a:1]\n    module: c:d\n", "apps.a.module", 5,
         "duplicate key"),
        ("s.toml", '[server]\naccess_log = true\n[apps.a]\nmodule = "a:b"\nbinds = ["a:1"]\n', "server.access_log", 2,
         'expected a path, "-" for stdout, or false, found the boolean true'),
    ],
)
def test_bad_structure_is_located(tmp_path: Path, name: str, text: str, key: str, line: int, words: str) -> None:
    path, found_line, message = _only_problem(_write(tmp_path, name, text))
    assert (path, found_line) == (key, line)
    assert words in message


CROSS_TOML = """\
[server]
control_socket = "ctl.sock"
[apps.a]
module = "a:b"
binds = ["0.0.0.0:8000", "unix:web.sock"]
[apps.b]
module = "a:b"
binds = ["127.0.0.1:8000", "unix:./web.sock", "tcp://localhost:9000", "unix:ctl.sock", "[::1]:7000"]
[apps.c]
module = "a:b"
binds = ["localhost:9000", "tcp://[::1]:7000", "127.0.0.2:8001"]
"""


def test_cross_checks_are_located_at_the_later_bind(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(_write(tmp_path, "site.toml", CROSS_TOML))
    found = [(d.path, d.line) for d in info.value.diagnostics]
    assert found == [
        ("apps.b.binds[0]", 8), ("apps.b.binds[1]", 8), ("apps.b.binds[3]", 8),
        ("apps.c.binds[0]", 11), ("apps.c.binds[1]", 11),
    ]
    assert "overlaps" in info.value.diagnostics[0].message
    assert "control socket" in info.value.diagnostics[2].message


def test_unix_bind_on_the_default_control_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from forkserve.config.paths import default_control_socket

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    site = tmp_path / "site.toml"
    site.write_text(f'[apps.a]\nmodule = "a:b"\nbinds = ["unix:{default_control_socket(str(site))}"]\n')
    with pytest.raises(ConfigError, match=r"site.toml:3:10: apps.a.binds\[0\]: .* is the control socket"):
        load(site)


def test_every_problem_in_one_run(tmp_path: Path) -> None:
    text = '[server]\nwat = 1\n[apps.a]\nmodule = 5\nbinds = ["a:1"]\nworkers = "2"\n[apps.b]\nbinds = 3\n'
    with pytest.raises(ConfigError) as info:
        load(_write(tmp_path, "site.toml", text))
    assert [(d.path, d.line) for d in info.value.diagnostics] == [
        ("server.wat", 2), ("apps.a.module", 4), ("apps.a.workers", 6), ("apps.b.module", 7), ("apps.b.binds", 8),
    ]
    assert str(info.value).splitlines()[0].startswith(f"{tmp_path}/site.toml:2:1: server.wat: unknown key")


def test_relative_paths_resolve_against_the_site_file(tmp_path: Path) -> None:
    text = b'[server]\npidfile = "run/x.pid"\n[apps.a]\nmodule = "a:b"\nbinds = ["unix:s.sock"]\nchdir = "../app"\n'
    site = load_text(text, str(tmp_path / "conf" / "site.toml"))
    assert site.server.pidfile == str(tmp_path / "conf" / "run" / "x.pid")
    assert site.apps["a"].chdir == str(tmp_path / "app")
    assert site.apps["a"].binds == (f"unix:{tmp_path}/conf/s.sock",)


def _numbers_masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _numbers_masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers_masked(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "<number>"
    return value


def test_the_example_site_says_the_same_in_both_formats() -> None:
    """site.yaml is site.toml in YAML. The quickstart has people edit the running example (`workers = 4`), so a
    checkout's two files may differ in their numbers: both must stay valid and set the same keys to the same
    strings, lists and tables (the same apps, modules, binds, env); the loader's TOML = YAML equality is the
    next test's, on its own text."""
    root = Path(__file__).resolve().parents[2] / "examples" / "configs"
    toml, yaml = load(root / "site.toml"), load(root / "site.yaml")
    assert sorted(toml.apps) == sorted(yaml.apps)
    data = [_numbers_masked(parse((root / name).read_text(), fmt).data) for name, fmt in (("site.toml", "toml"),
                                                                                            ("site.yaml", "yaml"))]
    assert data[0] == data[1]


def test_good_sites_in_both_formats_are_equal(tmp_path: Path) -> None:
    toml = load_text(TOML_BASE.format(extra="workers = 3").encode(), str(tmp_path / "x.toml"))
    yaml = load_text(YAML_BASE.format(extra="    workers: 3").encode(), str(tmp_path / "x.yml"))
    assert toml == yaml
    assert toml.apps["api"].workers == 3


def test_the_cross_checks_read_the_environment_only_from_their_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from forkserve.config.crosscheck import cross_check
    from forkserve.config.paths import Env, default_control_socket

    site = str(tmp_path / "site.toml")
    env = Env(str(tmp_path / "given"), 4242)
    data = {"apps": {"a": {"module": "a:b", "binds": [f"unix:{default_control_socket(site, env)}"]}}}
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "process"))
    [(key, message)] = cross_check(data, site, str(tmp_path), env)
    assert key == ("apps", "a", "binds", 0) and "is the control socket" in message
    assert cross_check(data, site, str(tmp_path), Env(None, 4242)) == []
    assert default_control_socket(site, Env(None, 4242)).startswith("/tmp/forkserve-4242/")
