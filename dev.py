#!/usr/bin/env python3
"""Developer entry point: needs only Python 3.10+.

    python3 dev.py site   # run the example site (examples/configs/site.toml) in the foreground
    python3 dev.py test   # run the whole test suite

Both create ./.venv on first use and install forkserve into it (editable, with the test and bench extras),
so a fresh clone needs nothing installed by hand. Extra arguments are passed through
(to `forkserve up` for `site`, to pytest for `test`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".forkserve-installed"


def ensure_venv() -> None:
    """Create the venv and (re)install when pyproject.toml changed since the last install."""
    if sys.version_info < (3, 10):
        sys.exit("forkserve needs Python 3.10 or newer")
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == want and PY.exists():
        return
    if not PY.exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing forkserve[test,bench] into .venv ...", flush=True)
    subprocess.run([str(PY), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([str(PY), "-m", "pip", "install", "-q", "-e", f"{ROOT}[test,bench]"], check=True)
    STAMP.write_text(want)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("site", "test"):
        print(__doc__, file=sys.stderr)
        return 2
    ensure_venv()
    command, rest = argv[0], argv[1:]
    if command == "site":
        args = [str(PY), "-m", "forkserve", "up", str(ROOT / "examples" / "configs" / "site.toml"), *rest]
    else:
        args = [str(PY), "-m", "pytest", *rest]
    os.chdir(ROOT)
    # exec so that Ctrl-C and SIGTERM reach forkserve / pytest directly
    os.execv(args[0], args)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
