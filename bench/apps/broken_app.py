"""A deploy that cannot boot: importing this module raises, as a bad release would."""

from __future__ import annotations

raise RuntimeError("broken_app: this release cannot boot (raised at import, on purpose)")
