"""The command line: `forkserve up` is parsed by its own small parser (start-up time); it must stay the same
parser as the `up` subcommand of the full one."""

from __future__ import annotations

import argparse

import pytest

from forkserve import cli


def _full_up() -> argparse.ArgumentParser:
    full = cli._parser()
    subparsers = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices["up"]  # type: ignore[no-any-return]


def test_the_up_parser_is_the_up_subcommand_of_the_full_parser() -> None:
    assert cli._up_parser().format_help() == _full_up().format_help()
    assert vars(cli._up_parser().parse_args(["site.toml"])) == vars(cli._parser().parse_args(["up", "site.toml"]))


@pytest.mark.parametrize("argv", [["up"], ["up", "a.toml", "b.toml"], ["up", "--bogus", "a.toml"]])
def test_bad_up_arguments_exit_2_with_the_up_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("usage: forkserve up [-h] site\n")
