"""`${VAR}` expansion, the strict dotenv reader, env_file in the loader, and what a revision and a change
say about the environment: tables, hostile input, and never a value in a message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from forkserve.changes import app_changes
from forkserve.config.dotenv import MAX_ENV_FILE_BYTES, DotenvError, EnvFileUnreadable, parse_dotenv, read_env_file
from forkserve.config.errors import ConfigError
from forkserve.config.expand import MAX_TOTAL_CHARS, MAX_VALUE_CHARS, ExpandError, expand, expand_data
from forkserve.config.load import load_text, load_text_sources
from forkserve.config.paths import Env
from forkserve.spec import AppSpec, DesiredState, LoadedSite, import_paths

ENVIRON = {"HOST": "db.internal", "EMPTY": "", "PASS": "s3cr3t-p4ss", "DOLLAR": "a$b"}


@pytest.mark.parametrize(("text", "expected"), [
    ("plain", "plain"),
    ("${HOST}", "db.internal"),
    ("pg://u:${PASS}@${HOST}/x", "pg://u:s3cr3t-p4ss@db.internal/x"),
    ("${MISSING:-fallback}", "fallback"),
    ("${EMPTY:-fallback}", "fallback"),  # :- also covers empty, as in sh
    ("${EMPTY}", ""),  # an empty value is a value
    ("${HOST:-ignored}", "db.internal"),
    ("${MISSING:-}", ""),
    ("$$", "$"),
    ("$${HOST}", "${HOST}"),  # an escaped $ starts no reference
    ("price: $$5", "price: $5"),
    ("${MISSING:-a$$b}", "a$b"),
    ("${DOLLAR}", "a$b"),  # a value is never expanded again
    ("${MISSING:-x:-y}", "x:-y"),
    ("}{", "}{"),
])
def test_expansion(text: str, expected: str) -> None:
    assert expand(text, ENVIRON) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("${MISSING}", "environment variable MISSING is not set (write ${MISSING:-default} for a default)"),
    ("${", "`${` is not closed"),
    ("abc ${HOST", "`${` is not closed"),
    ("${}", "`${}` names no variable"),
    ("${:-x}", "`${}` names no variable"),
    ("${1A}", "`${1A}` is not a reference"),
    ("${A B}", "`${A B}` is not a reference"),
    ("${HOST:?err}", "`${HOST:?err}` is not a reference"),
    ("${HOST-x}", "`${HOST-x}` is not a reference"),
    ("${A:-${B}}", "references do not nest"),
    ("${A:-x$y}", "holds a lone $"),
    ("$HOST", "`$HOST` is not a reference: write ${HOST}"),
    ("50$", "`$` is not a reference: write $$"),
    ("$ {HOST}", "`$` is not a reference"),
    ("${" + "A" * 5000 + "}", "names a variable longer than 200 characters"),
    ("${" + "A" * 5000, "is not closed"),
])
def test_expansion_errors(text: str, message: str) -> None:
    with pytest.raises(ExpandError) as info:
        expand(text, ENVIRON)
    assert message in str(info.value)
    assert "s3cr3t" not in str(info.value) and len(str(info.value)) < 300


def test_reads_are_recorded_set_or_not() -> None:
    reads: dict[str, str | None] = {}
    expand("${HOST}${MISSING:-x}", ENVIRON, reads)
    assert reads == {"HOST": "db.internal", "MISSING": None}


def test_huge_values_are_bounded() -> None:
    big = {"BIG": "x" * (MAX_VALUE_CHARS + 1), "HALF": "y" * (MAX_VALUE_CHARS // 2 + 1)}
    with pytest.raises(ExpandError, match="longer than 128 KiB"):
        expand("${BIG}", big)
    with pytest.raises(ExpandError, match="longer than 128 KiB"):
        expand("${HALF}${HALF}", big)
    many = {"V": "v" * (MAX_VALUE_CHARS - 10)}
    data = {"apps": {"a": {"env": {f"K{i}": "${V}" for i in range(MAX_TOTAL_CHARS // MAX_VALUE_CHARS + 2)}}}}
    _, found = expand_data(data, many)
    assert [message for _, message in found.problems] == ["the expanded values of this file exceed 4 MiB in total"]


def test_only_string_values_are_expanded() -> None:
    data = {"${HOST}": {"n": 4, "b": True, "list": ["${HOST}", 1.5], "s": "${HOST}"}}
    out, found = expand_data(data, ENVIRON)
    assert out == {"${HOST}": {"n": 4, "b": True, "list": ["db.internal", 1.5], "s": "db.internal"}}
    assert found.templates == {("${HOST}", "list", 0): "${HOST}", ("${HOST}", "s"): "${HOST}"}


# --- dotenv ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("", {}),
    ("\n\n  \n", {}),
    ("# only a comment\n   # indented\n", {}),
    ("A=1", {"A": "1"}),
    ("A=1\nB=2\n", {"A": "1", "B": "2"}),
    ("export A=1\n", {"A": "1"}),
    ("  export   A = spaced value  \n", {"A": "spaced value"}),
    ("A=\n", {"A": ""}),
    ("A=x # a comment\n", {"A": "x"}),
    ("A=x#not-a-comment\n", {"A": "x#not-a-comment"}),
    ("A='single $HOME \\n # kept'\n", {"A": "single $HOME \\n # kept"}),
    ('A="tab\\there \\"q\\" \\\\ \\$ \\d"\n', {"A": 'tab\there "q" \\ $ \\d'}),
    ('A="line1\nline2"\nB=2\n', {"A": "line1\nline2", "B": "2"}),
    ("A='multi\nline' # c\n", {"A": "multi\nline"}),
    ("A=${NOT_EXPANDED}\n", {"A": "${NOT_EXPANDED}"}),
    ("A=1\r\nB=2\r\n", {"A": "1", "B": "2"}),
    ("\ufeffA=1\n", {"A": "1"}),
    ("A=a=b=c\n", {"A": "a=b=c"}),
    ("_x9=ok\n", {"_x9": "ok"}),
    ("exported=1\n", {"exported": "1"}),
])
def test_dotenv(text: str, expected: dict[str, str]) -> None:
    assert parse_dotenv(text.encode()) == expected


@pytest.mark.parametrize(("data", "line", "col", "message"), [
    (b"A=1\nsecret-without-key\n", 2, 1, "expected KEY=value"),
    (b"A=1\nexport\n", 2, 1, "expected KEY=value"),
    (b"1A=x\n", 1, 1, '"1A" is not a variable name'),
    (b"A-B=x\n", 1, 1, '"A-B" is not a variable name'),
    (b"=x\n", 1, 1, '"" is not a variable name'),
    (b"A=1\n\nA=2\n", 3, 1, "A is set twice (first at line 1)"),
    (b"A='never closed\nB=2\n", 1, 3, "never closed"),
    (b'A="x" trailing\n', 1, 7, "unexpected text after the closing quote"),
    (b"A=1\nB=x\x00y\n", 2, 4, "NUL"),
    (b"A=1\nB=\xff\n", 2, 3, "not valid UTF-8"),
])
def test_dotenv_errors(data: bytes, line: int, col: int, message: str) -> None:
    with pytest.raises(DotenvError) as info:
        parse_dotenv(data)
    assert (info.value.line, info.value.col) == (line, col)
    assert message in info.value.message
    assert b"secret" not in info.value.message.encode() or message.startswith('"')


def test_env_file_reads_are_bounded_and_regular_files_only(tmp_path: Path) -> None:
    huge = tmp_path / "huge.env"
    with open(huge, "wb") as f:
        f.write(b"A=" + b"x" * (10 << 20))  # 10 MB
    with pytest.raises(EnvFileUnreadable, match="larger than 1 MiB"):
        read_env_file(str(huge))
    exact = tmp_path / "exact.env"
    exact.write_bytes(b"A=" + b"x" * (MAX_ENV_FILE_BYTES - 2))
    assert len(read_env_file(str(exact))) == MAX_ENV_FILE_BYTES
    with pytest.raises(EnvFileUnreadable, match="a directory"):
        read_env_file(str(tmp_path))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(EnvFileUnreadable, match="FIFO"):  # and it does not block
        read_env_file(str(fifo))
    with pytest.raises(EnvFileUnreadable, match="No such file"):
        read_env_file(str(tmp_path / "missing.env"))
    with pytest.raises(EnvFileUnreadable, match="Not a directory"):  # unreadable, whoever we are
        read_env_file(str(huge / "x.env"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000")
def test_an_unreadable_env_file(tmp_path: Path) -> None:
    path = tmp_path / "locked.env"
    path.write_text("A=1\n")
    path.chmod(0)
    with pytest.raises(EnvFileUnreadable, match="Permission denied"):
        read_env_file(str(path))


# --- in the loader -----------------------------------------------------------------------------------------------

SITE = '[apps.web]\nmodule = "m:app"\nbinds = ["127.0.0.1:${PORT:-8000}"]\n'


def _site(tmp_path: Path, extra: str = "", env_file: str | None = None) -> Path:
    path = tmp_path / "conf" / "site.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(SITE + extra)
    if env_file is not None:
        (path.parent / "app.env").write_text(env_file)
    return path


def _load(path: Path, environ: dict[str, str] | None = None) -> LoadedSite:
    env = Env(None, 1000, environ or {}, "/start")
    site, sources = load_text_sources(path.read_bytes(), str(path), env)
    return LoadedSite.from_config(site, env.start_dir, sources)


def test_env_file_is_merged_under_env(tmp_path: Path) -> None:
    path = _site(tmp_path, 'env_file = "app.env"\nenv = { B = "site", C = "${C_VALUE}" }\n',
                 "export A=file-value\nB=file-value\n")
    loaded = _load(path, {"C_VALUE": "c", "PORT": "9000"})
    spec = loaded.desired.apps["web"]
    assert dict(spec.env) == {"A": "file-value", "B": "site", "C": "c"}
    assert str(spec.binds[0]) == "tcp://127.0.0.1:9000"
    assert loaded.sources is not None
    assert [name for name, _ in loaded.sources.variables] == ["C_VALUE", "PORT"]
    assert [p for p, _ in loaded.sources.env_files] == [str(tmp_path / "conf" / "app.env")]
    assert loaded.sources.file_env == (("web", str(tmp_path / "conf" / "app.env"), ("A",)),)
    assert loaded.sources.secret_env == (("web", "C", "${C_VALUE}"),)
    assert "file-value" not in repr(load_text(path.read_bytes(), str(path), Env(None, 1000, {"C_VALUE": "c"})))


def test_a_changed_variable_or_env_file_rolls_and_only_its_name_is_shown(tmp_path: Path) -> None:
    path = _site(tmp_path, 'env_file = "app.env"\nenv = { DB = "${DB_PASSWORD}" }\n', "TOKEN=one\n")
    first = _load(path, {"DB_PASSWORD": "hunter2"})
    second = _load(path, {"DB_PASSWORD": "hunter3"})
    (path.parent / "app.env").write_text("TOKEN=two\n")
    third = _load(path, {"DB_PASSWORD": "hunter3"})
    revisions = {s.desired.apps["web"].revision for s in (first, second, third)}
    assert len(revisions) == 3
    assert [str(c) for c in app_changes(first.desired, second.desired)] == ["web rolling (env changed: DB)"]
    assert [str(c) for c in app_changes(second.desired, third.desired)] == ["web rolling (env changed: TOKEN)"]


@pytest.mark.parametrize(("extra", "environ", "expected"), [
    ('env = { A = "${NOPE}" }\n', {}, "site.toml:4:9: apps.web.env.A: environment variable NOPE is not set"),
    ('env = { "${X}" = "v" }\n', {"X": "A"}, 'apps.web.env."${X}": environment variable name "${X}" is not allowed'),
    ('workers = "${N}"\n', {"N": "4"}, 'found the string "${N}" from the environment (its value is not shown)'),
    ('env = { A = "x${NUL}" }\n', {"NUL": "\0"}, "the value of A holds a NUL character"),
    ('env_file = "app.env"\n', {}, "site.toml:4:1: apps.web.env_file: env_file app.env cannot be read: No such"),
    ('env_file = "."\n', {}, "env_file . cannot be read: not a regular file: it is a directory"),
    ('env_file = "${DIR}/x.env"\n', {"DIR": "/nonexistent-secret-dir"},
     "env_file ${DIR}/x.env cannot be read"),
    ('[server]\nsettle = 301\n', {}, "server.settle: expected a value at most 300"),
])
def test_located_errors_that_show_no_value(tmp_path: Path, extra: str, environ: dict[str, str],
                                           expected: str) -> None:
    path = _site(tmp_path, extra)
    with pytest.raises(ConfigError) as info:
        load_text(path.read_bytes(), str(path), Env(None, 1000, environ))
    text = str(info.value)
    assert expected in text
    for value in environ.values():
        if len(value) > 1:
            assert value not in text


def test_a_bad_env_file_line_is_located_in_the_env_file(tmp_path: Path) -> None:
    path = _site(tmp_path, 'env_file = "app.env"\n', "A=1\nB='open\n")
    with pytest.raises(ConfigError) as info:
        load_text(path.read_bytes(), str(path), Env(None, 1000))
    assert str(info.value) == (f"{tmp_path}/conf/app.env:2:3: the value's ' is never closed "
                               "(the env_file of apps.web)")


def test_settle_defaults_and_reaches_the_server_settings(tmp_path: Path) -> None:
    assert _load(_site(tmp_path)).server.settle == 3.0
    assert _load(_site(tmp_path, "[server]\nsettle = 0.5\n")).server.settle == 0.5


# --- where an app imports from -----------------------------------------------------------------------------------

def _spec(**fields: object) -> AppSpec:
    base = DesiredState.from_config(load_text(SITE.encode(), "/srv/site.toml", Env(None, 1000)), "/start")
    from dataclasses import replace

    return replace(base.apps["web"], **fields)  # type: ignore[arg-type]


def test_import_paths() -> None:
    assert import_paths(_spec()) == ("/start", ("/start",))
    assert import_paths(_spec(pythonpath=("/a", "/b"))) == ("/start", ("/a", "/b", "/start"))
    assert import_paths(_spec(chdir="/app", pythonpath=("/a",))) == ("/app", ("/a", "/app"))
    assert import_paths(_spec(start_dir="")) == ("", ())


def test_the_start_directory_is_part_of_the_revision_only_without_chdir() -> None:
    text = SITE.encode()
    one = DesiredState.from_config(load_text(text, "/srv/site.toml", Env(None, 1000)), "/one").apps["web"]
    two = DesiredState.from_config(load_text(text, "/srv/site.toml", Env(None, 1000)), "/two").apps["web"]
    assert one.revision != two.revision
    text += b'chdir = "/app"\n'
    one = DesiredState.from_config(load_text(text, "/srv/site.toml", Env(None, 1000)), "/one").apps["web"]
    two = DesiredState.from_config(load_text(text, "/srv/site.toml", Env(None, 1000)), "/two").apps["web"]
    assert one.revision == two.revision
