"""What an app's revision depends on beyond its site file: the code release on disk, and explicit code rolls.

Two deploy styles need the master to roll workers although the site file did not change:

- **release directories** (Capistrano's layout: `current -> releases/2026-12-02-1`). When `chdir` or a
  `pythonpath` entry goes through a symlink, the *resolved* directory is part of the app's revision, and it is
  what the worker changes to and puts on `sys.path`. Switching the symlink therefore makes a new revision (the
  master checks every `RELEASE_CHECK` seconds, like the ConfigMap `..data` swap), and the workers of the old
  revision keep running the old release directory: "fall back to the last healthy revision" really runs the
  old code, and a worker of it that dies is replaced from the old release.
- **in-place code + `forkserve reload [APP...]` / SIGHUP**: each explicit reload bumps the `generation` of the
  named apps (all by default), which is part of the revision: the app rolls to freshly started workers,
  readiness-gated like any roll, even when nothing on disk that forkserve can see has changed.

`deployed(desired, releases, generations)` is pure: the site file's specs in, the specs the master runs out.
`resolve(spec)` is the one OS call (realpath).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

from forkserve.spec import AppSpec, DesiredState, site_revision

RELEASE_CHECK = 1.0  # seconds between checks of the release symlinks


@dataclass(frozen=True)
class Release:
    """An app's code directories with every symlink resolved."""

    chdir: str | None
    pythonpath: tuple[str, ...]

    def describe(self) -> str:
        return ", ".join(p for p in (self.chdir, *self.pythonpath) if p) or "-"


def as_written(spec: AppSpec) -> Release:
    return Release(spec.chdir, spec.pythonpath)


def resolve(spec: AppSpec) -> Release:
    """The release the spec's directories point at now (a missing directory resolves to itself)."""
    return Release(os.path.realpath(spec.chdir) if spec.chdir else None,
                   tuple(os.path.realpath(p) for p in spec.pythonpath))


def deployed_spec(spec: AppSpec, release: Release | None, generation: int) -> AppSpec:
    """The spec with its resolved release and generation folded into its revision (unchanged if neither adds
    anything, so a site without symlinks and reloads keeps the revisions its file gives)."""
    release = release or as_written(spec)
    if generation == 0 and release == as_written(spec):
        return spec
    digest = hashlib.sha256(json.dumps([spec.revision, generation, release.chdir, release.pythonpath]).encode())
    return replace(spec, revision=digest.hexdigest()[:8], chdir=release.chdir, pythonpath=release.pythonpath)


def deployed(desired: DesiredState, releases: Mapping[str, Release], generations: Mapping[str, int]
             ) -> DesiredState:
    apps = {name: deployed_spec(spec, releases.get(name), generations.get(name, 0))
            for name, spec in desired.apps.items()}
    return desired if apps == desired.apps else replace(desired, apps=apps, revision=site_revision(apps))
