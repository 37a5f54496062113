"""Golden messages: each fixture under golden/ is checked and its text output compared to `<name>.expected`.

Set FORKSERVE_REGEN_GOLDEN=1 to rewrite the expected files after a deliberate wording change (then review the
diff). The annotated invalid examples are checked the same way against the comment at their top.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest

from forkserve.config.check import run_check

GOLDEN = Path(__file__).parent / "golden"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "configs"
FIXTURES = sorted(p for p in GOLDEN.iterdir() if p.suffix in (".toml", ".yaml", ".yml"))


SECRET = "golden-secret:[::1]:5432/value"  # what ${FORKSERVE_GOLDEN_SECRET} is: it must never be shown


def _check_text(directory: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.chdir(directory)
    monkeypatch.setenv("FORKSERVE_GOLDEN_SECRET", SECRET)
    monkeypatch.delenv("FORKSERVE_GOLDEN_UNSET", raising=False)
    out = io.StringIO()
    code = run_check([name], out=out)
    for part in (SECRET, SECRET[:12], SECRET[-12:], "5432/value"):
        assert part not in out.getvalue()
    return code, out.getvalue()


@pytest.mark.parametrize("fixture", FIXTURES, ids=[p.name for p in FIXTURES])
def test_golden_messages(fixture: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, text = _check_text(GOLDEN, fixture.name, monkeypatch)
    expected = fixture.with_name(fixture.name + ".expected")
    if os.environ.get("FORKSERVE_REGEN_GOLDEN"):
        expected.write_text(text)
    assert code == 1
    assert text == expected.read_text()


INVALID = sorted(EXAMPLES.glob("invalid-*"))


@pytest.mark.parametrize("example", INVALID, ids=[p.name for p in INVALID])
def test_annotated_invalid_examples(example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    promised = [m[1] for m in re.finditer(r"^#   (.*)$", example.read_text(), re.M)]
    code, text = _check_text(EXAMPLES, example.name, monkeypatch)
    assert code == 1
    assert text.splitlines() == promised
