"""The Kubernetes example run the way its container runs it (examples/deploy/kubernetes: Dockerfile, deployment.yaml):
the ConfigMap's site file, as a non-root user, on a read-only root file system, with HOME pointing nowhere; once
with the deployment's emptyDir volumes for XDG_RUNTIME_DIR and XDG_CACHE_HOME, and once without them (serving must
not depend on the control socket or the cache).

No docker here: a private mount namespace (`unshare -m`) remounts / read-only, bind mounts stand for the emptyDir
volumes, and `setpriv` drops to `nobody`. Needs root (to make the namespace and switch users); skipped otherwise.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import yaml

from forkserve.config.paths import Env, default_control_socket
from tests.integration.conftest import Site, get, wait_until

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "examples" / "deploy" / "kubernetes"
EXAMPLE_APPS = ROOT / "examples" / "apps"
NOBODY = 65534


def _unavailable() -> str | None:
    if os.getuid() != 0:
        return "needs root: to remount / read-only in a private mount namespace and to run forkserve as nobody"
    for tool in ("unshare", "setpriv"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", "mount -o remount,bind,ro /"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"cannot make a read-only mount namespace here: {probe.stderr.strip()}"
    return None


UNAVAILABLE = _unavailable()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")


def container_site() -> str:
    """The ConfigMap's site file, with its binds on free loopback ports and /app (the image's code) pointing at
    the checkout's examples/apps (what the Dockerfile copies there)."""
    text = yaml.safe_load((KUBERNETES / "configmap.yaml").read_text())["data"]["site.toml"]
    text, binds = re.subn(r'"0\.0\.0\.0:\d+"', '"127.0.0.1:0"', text)
    assert binds == 3, text  # web, api and the metrics listener
    assert text.count('chdir = "/app"') == 2, text
    return text.replace('chdir = "/app"', f'chdir = "{EXAMPLE_APPS}"')


@pytest.fixture
def container_root() -> Iterator[Path]:
    """A directory `nobody` can read (pytest's tmp_path is private to root), removed after the test."""
    root = Path(tempfile.mkdtemp(prefix="forkserve-container-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


class ContainerSite(Site):
    """`forkserve up` as the container runs it: `nobody`, / read-only, HOME missing; `volumes` adds the
    deployment's emptyDirs (writable directories) as XDG_RUNTIME_DIR and XDG_CACHE_HOME."""

    def __init__(self, directory: Path, text: str, name: str, expect: Iterable[str], root: Path,
                 volumes: bool, runtime_dir: str = "missing") -> None:
        super().__init__(root, text, name, expect)
        self.log_path = directory / "master.log"  # written by root through the inherited descriptor
        self.volumes = volumes
        self.runtime_dir = root / ("run" if volumes else runtime_dir)
        self.cache_dir = root / "cache"
        if volumes:
            for empty_dir in (self.runtime_dir, self.cache_dir):
                empty_dir.mkdir()
                empty_dir.chmod(0o777)  # as the kubelet creates an emptyDir

    def environment(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", "LANG": "C.UTF-8",
               "XDG_RUNTIME_DIR": str(self.runtime_dir), "PYTHONDONTWRITEBYTECODE": "1"}
        if self.volumes:
            env["XDG_CACHE_HOME"] = str(self.cache_dir)
        return env

    def start(self, wait_ready: bool = True) -> Site:
        mounts = [f"mount --bind {shlex.quote(str(d))} {shlex.quote(str(d))}"
                  for d in ((self.runtime_dir, self.cache_dir) if self.volumes else ())]
        script = " && ".join([*mounts, "mount -o remount,bind,ro /",
                              f'exec setpriv --reuid {NOBODY} --regid {NOBODY} --clear-groups -- "$@"'])
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
             sys.executable, "-m", "forkserve", "up", str(self.path)],
            stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True, env=self.environment())
        if wait_ready:
            wait_until(lambda: self.ready("web", 4) and self.ready("api", 2), timeout=60,
                       what="both apps of the ConfigMap's site to be ready")
        return self

    def metrics(self) -> tuple[str, int]:
        m = wait_until(lambda: re.search(r"metrics on http://([0-9.]+):(\d+)/metrics", self.log()),
                       what="the metrics listener in the log")
        return m.group(1), int(m.group(2))


def serves(site: ContainerSite) -> None:
    status, body = get(site.address("web"))
    assert (status, body) == (200, "Hello from forkserve!\n")
    status, body = get(site.address("api"), "/items")
    assert status == 200 and "teapot" in body
    assert get(site.metrics(), "/readyz")[0] == 200
    assert get(site.metrics(), "/healthz")[0] == 200


def forkserve(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "forkserve", *args], capture_output=True, text=True, timeout=60,
                          check=False, env=env)


def test_the_kubernetes_example_serves_as_nobody_on_a_read_only_root_with_its_volumes(
    container_root: Path, site_factory
) -> None:
    site = site_factory(container_site(), site_class=ContainerSite, root=container_root, volumes=True).start()
    assert os.stat(f"/proc/{site.pid}").st_uid == NOBODY
    serves(site)
    # the control socket is in the runtime emptyDir, found from the site path as `kubectl exec` would find it
    socket = default_control_socket(str(site.path), Env(str(site.runtime_dir), NOBODY))
    assert socket.startswith(f"{site.runtime_dir}/forkserve/")
    env = {**site.environment(), "PATH": os.environ.get("PATH", "")}
    done = forkserve("wait", str(site.path), "--socket", socket, "--settle", "0", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert forkserve("status", "--ready", str(site.path), "--socket", socket, env=env).returncode == 0
    # the validated site file was cached in the cache emptyDir, so a restarted container skips the validation
    assert list((site.cache_dir / "forkserve").iterdir())


@pytest.mark.parametrize("runtime_dir", ["missing", "."], ids=["missing", "read-only"])
def test_without_writable_volumes_it_still_serves_and_says_why_status_cannot_reach_it(
    container_root: Path, site_factory, runtime_dir: str
) -> None:
    """No emptyDirs: XDG_RUNTIME_DIR is missing (and cannot be created) or read-only, the cache has nowhere to go.
    The master logs a warning about the control socket and serves; the cache turns itself off without a word."""
    site = site_factory(container_site(), site_class=ContainerSite, root=container_root, volumes=False,
                        runtime_dir=runtime_dir, expect=[r"control socket"]).start()
    serves(site)
    assert re.search(r"\[WARNING\] .*control socket", site.log())
    env = {**site.environment(), "PATH": os.environ.get("PATH", "")}
    status = forkserve("status", str(site.path), env=env)
    assert status.returncode == 2 and "no master is running" in status.stderr
    assert not (site.runtime_dir / "forkserve").exists()
