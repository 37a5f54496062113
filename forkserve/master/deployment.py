"""The desired state the master runs: the site file's specs, with code releases resolved and code rolls applied.

The site file says what to run; `forkserve.deploy` says how the code on disk and explicit reloads change an
app's revision. `Deployment` keeps the three inputs (the file's `DesiredState`, each app's resolved release,
each app's roll generation), derives the state the plan aims at and hands it to the master (`publish`): it is
the master's only source of `desired` while it is not stopping. It is also what reloads call back
(`sitefile.ReloadHost`): applying a valid file, and saying whether a change takes something away.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection
from typing import Protocol

from forkserve.config.dependencies import Sources
from forkserve.config.sitefile import signature
from forkserve.deploy import Release, as_written, deployed, resolve
from forkserve.master.records import Records
from forkserve.master.sitefile import SiteFile
from forkserve.outcomes import ReloadKind, ReloadOutcome
from forkserve.spec import DesiredState, LoadedSite

log = logging.getLogger("forkserve")


class DeploymentHost(Protocol):
    def publish(self, desired: DesiredState) -> None: ...

    def stopping(self) -> bool: ...

    def before_reload(self, explicit: bool) -> None: ...

    def after_reload(self, explicit: bool, outcome: ReloadOutcome) -> None: ...


class Deployment:
    def __init__(self, site: SiteFile, records: Records, host: DeploymentHost) -> None:
        self.site, self.records, self.host = site, records, host
        self.file = DesiredState()  # as the site file says
        self.releases: dict[str, Release] = {}
        self.generations: dict[str, int] = {}
        self.env_files_seen: dict[str, tuple[int, int, int, int] | None] = {}  # path -> stat signature

    @property
    def desired(self) -> DesiredState:
        return deployed(self.file, self.releases, self.generations)

    def accept(self, new: DesiredState, roll: Collection[str] = ()) -> list[str]:
        """A new site file; `roll`: apps whose code to roll (an explicit reload). Returns the apps rolled."""
        self.file = new
        self.releases = {name: resolve(spec) for name, spec in new.apps.items()}
        self.generations = {name: n for name, n in self.generations.items() if name in new.apps}
        rolled = sorted(name for name in roll if name in new.apps)
        for name in rolled:
            self.generations[name] = self.generations.get(name, 0) + 1
        return rolled

    def check_releases(self) -> bool:
        """Re-resolve every app's directories; True when a release symlink now points elsewhere."""
        changed = False
        for name, spec in self.file.apps.items():
            if as_written(spec) == Release(None, ()):
                continue
            now = resolve(spec)
            before = self.releases.get(name)
            if now != before:
                self.releases[name] = now
                changed = True
                log.info("app %s: release changed (%s -> %s): rolling to it", name,
                         before.describe() if before else "-", now.describe())
        return changed

    def env_files_changed(self, sources: Sources | None) -> bool:
        """Has an env_file the applied site read changed on disk since the last call (by its stat signature)?
        env_files may live outside the site file's directory, which is all the watcher sees."""
        seen = {path: signature(path) for path, _ in sources.env_files} if sources else {}
        changed = bool(self.env_files_seen) and seen != self.env_files_seen
        self.env_files_seen = seen
        return changed

    def to_roll(self, apps: Collection[str] = ()) -> set[str]:
        """The apps a `forkserve reload APP...` rolls (all by default). ValueError: an app not in the site."""
        unknown = sorted(name for name in apps if name not in self.file.apps)
        if unknown:
            raise ValueError(f"no app named {', '.join(unknown)} in the site (apps: "
                             f"{', '.join(sorted(self.file.apps)) or 'none'})")
        return set(apps or self.file.apps)

    # ---- sitefile.ReloadHost ------------------------------------------------------------------------------------

    def apply(self, loaded: LoadedSite, data: bytes, explicit: bool, roll: Collection[str] = ()) -> ReloadOutcome:
        if self.host.stopping():  # a validation that finished after a stop was asked for: a stop is final
            log.info("site file validated while stopping: not applied")
            return ReloadOutcome(ReloadKind.STOPPING, self.site.revision)
        first = self.site.server is None
        outcome = self.site.accept(loaded, data, self.file)
        rolled = self.accept(loaded.desired, roll if explicit else ())
        self.host.publish(self.desired)
        if rolled:
            outcome = dataclasses.replace(outcome, rolled=tuple(rolled))
            self.site.last_result = outcome.line()
        if not first:
            log.info("%s", self.site.last_result)
        return outcome

    def before_reload(self, explicit: bool) -> None:
        self.host.before_reload(explicit)

    def after_reload(self, explicit: bool, outcome: ReloadOutcome) -> None:
        self.host.after_reload(explicit, outcome)

    def clear_backoff(self) -> None:
        self.records.backoff.clear()

    def stopping(self) -> bool:
        return self.host.stopping()

    def settle(self) -> float:
        return self.site.server.settle if self.site.server else 0.0

    def destructive(self, loaded: LoadedSite) -> str:
        """What `loaded` takes away from the running file, in words: removed apps and binds; "" when nothing."""
        new = loaded.desired
        parts = [f"removes app {name}" for name in sorted(self.file.apps) if name not in new.apps]
        for name, spec in sorted(self.file.apps.items()):
            after = new.apps.get(name)
            gone = [str(b) for b in spec.binds if after is not None and b not in after.binds]
            if gone:
                parts.append(f"removes {', '.join(gone)} from {name}")
        return "; ".join(parts)
