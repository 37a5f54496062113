"""Whole-file problems get one clear error; no input of any kind escapes as anything but ConfigError."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forkserve.config.load import MAX_BYTES, ConfigError, load, load_text


def _error(text: bytes, name: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_text(text, name)
    return info.value


@pytest.mark.parametrize(
    ("text", "name", "words", "line"),
    [
        (b"", "s.toml", "the file is empty", 1),
        (b"  \n\n", "s.yaml", "the file is empty", 1),
        (b"# only a comment\n", "s.toml", "no settings", 1),
        (b"# only a comment\n", "s.yaml", "no settings", 1),
        (b"a = 1\n\xff\xfe\n", "s.toml", "not valid UTF-8 (byte 0xff)", 2),
        (b"- 1\n- 2\n", "s.yaml", "top level must be a mapping", 1),
        (b"just words\n", "s.yaml", "top level must be a mapping", 1),
        (b"apps:\n  a:\n    module: a:b\n", "s.toml", "looks like YAML", 1),
        (b'[apps.a]\nmodule = "a:b"\nbinds = ["a:1"]\n', "s.yaml", "looks like TOML", 1),
        (b"a = 1\n", "s.json", "unknown file extension '.json'", None),
        (b'a = "x\n', "s.toml", "", 1),
        (b"a: [1, 2\nb: 3\n", "s.yaml", "YAML syntax error", 2),
        (b"a: &x 1\nb: *x\n", "s.yaml", "anchors and aliases", 1),
        (b"a: !!python/object:os.system x\n", "s.yaml", "explicit tags", 1),
        (b"[" * 5000, "s.yaml", "", None),
        (b"a = " + b"[" * 5000, "s.toml", "", None),
    ],
)
def test_whole_file_problem(text: bytes, name: str, words: str, line: int | None) -> None:
    err = _error(text, name)
    assert len(err.diagnostics) == 1
    assert words in err.diagnostics[0].message
    if line is not None:
        assert err.diagnostics[0].line == line
    assert "cannot be read (" not in str(err)  # not the last-resort net


def test_too_large() -> None:
    err = _error(b"#" * (MAX_BYTES + 1), "s.toml")
    assert "larger than 1 MiB" in str(err)


def test_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular file: it is a directory") as info:
        load(tmp_path)
    assert not info.value.io_error
    fifo = tmp_path / "site.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load(fifo)  # must not block waiting for a writer


def test_missing_file_is_an_io_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file") as info:
        load(tmp_path / "nope.toml")
    assert info.value.io_error


@settings(max_examples=150, deadline=None)
@given(text=st.binary(max_size=300), name=st.sampled_from(["g.toml", "g.yaml", "g.yml"]))
def test_garbage_bytes_never_crash(text: bytes, name: str) -> None:
    try:
        load_text(text, name)
    except ConfigError as err:
        assert err.diagnostics
        assert "cannot be read (" not in str(err), str(err)


_YAMLISH = st.text(alphabet=st.sampled_from(list("ab:-[]{}\"',#&*!|>?%@` \n\t01.~")), max_size=120)
_TOMLISH = st.text(alphabet=st.sampled_from(list("ab=.[]{}\"',#\n \t01:+-_ape")), max_size=120)


@settings(max_examples=200, deadline=None)
@given(yaml_text=_YAMLISH, toml_text=_TOMLISH)
def test_near_miss_syntax_never_crashes(yaml_text: str, toml_text: str) -> None:
    for text, name in ((yaml_text, "n.yaml"), (toml_text, "n.toml")):
        try:
            load_text(text.encode(), name)
        except ConfigError as err:
            assert "cannot be read (" not in str(err), f"{name}: {text!r}: {err}"
