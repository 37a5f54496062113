"""Live reconcile: edit the site file, the running site converges. Real files, real processes, pids compared."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from forkserve.control.client import call, socket_path
from forkserve.control.protocol import Request
from tests.integration.conftest import APPS, Site, boot_failure, get, pid_of, wait_until


def app_block(name: str, workers: int = 2, tag: str = "v1", binds: str = '"127.0.0.1:0"', extra: str = "") -> str:
    return f"""
[apps.{name}]
module = "basic:app"
chdir = "@APPS@"
binds = [{binds}]
workers = {workers}
env = {{ TAG = "{tag}" }}
{extra}
"""


def worker_pids(site: Site) -> set[int]:
    return site.children()


def applied(site: Site, count: int) -> bool:
    return site.log().count("applied:") >= count


class Load:
    """Steady client load on one address in a thread; counts failures (non-200 or connection errors)."""

    def __init__(self, address: tuple[str, int] | str, path: str = "/") -> None:
        self.address, self.path = address, path
        self.ok = 0
        self.failures: list[str] = []
        self.bodies: list[str] = []
        self.max_latency = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                status, body = get(self.address, self.path, timeout=10)
            except OSError as exc:
                self.failures.append(repr(exc))
                continue
            self.max_latency = max(self.max_latency, time.monotonic() - started)
            if status != 200:
                self.failures.append(f"HTTP {status}")
            else:
                self.ok += 1
                self.bodies.append(body)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def test_scale_only_changes_touch_no_other_worker(site_factory) -> None:
    site = site_factory(app_block("web", 2) + app_block("api", 1)).start()
    wait_until(lambda: site.ready("web", 2) and site.ready("api", 1))
    before = worker_pids(site)
    site.write(app_block("web", 4) + app_block("api", 1))
    wait_until(lambda: site.ready("web", 4), what="scale up to 4")
    after_up = worker_pids(site)
    assert before <= after_up and len(after_up) == 5  # nobody restarted
    assert "web scaled 2->4" in site.log()
    site.write(app_block("web", 1) + app_block("api", 1))
    wait_until(lambda: len(worker_pids(site)) == 2, what="scale down to 1")
    assert worker_pids(site) <= after_up  # survivors are old workers, none new


def test_a_spec_change_rolls_with_no_failed_request(site_factory) -> None:
    site = site_factory(app_block("web", 2, "v1")).start()
    address = site.address("web")
    before = worker_pids(site)
    with Load(address) as load:
        wait_until(lambda: load.ok > 20)
        site.write(app_block("web", 2, "v2"))
        wait_until(lambda: applied(site, 1) and not (worker_pids(site) & before) and len(worker_pids(site)) == 2,
                   timeout=30, what="all workers replaced")
        seen = load.ok
        wait_until(lambda: load.ok > seen + 20)
    assert load.failures == [], site.log()[-4000:]  # the master's log tells what happened around a failure
    assert load.bodies[-1].startswith("v2 ")
    assert "web rolling (env changed: TAG)" in site.log()  # the variable's name, never its value


def test_an_invalid_edit_changes_nothing_and_a_fix_applies(site_factory) -> None:
    site = site_factory(app_block("web", 2), expect=[r"site file is invalid; nothing changed"]).start()
    wait_until(lambda: site.ready("web", 2))
    before = worker_pids(site)
    site.write(app_block("web", 2).replace("workers = 2", 'workers = "lots"'))
    wait_until(lambda: "site file is invalid" in site.log(), what="the error to be logged")
    assert re.search(r"site\.toml:\d+:\d+: apps\.web\.workers", site.log())
    assert worker_pids(site) == before
    assert get(site.address("web"))[0] == 200
    site.write(app_block("web", 3))
    wait_until(lambda: site.ready("web", 3), what="the fixed file to apply")
    assert before <= worker_pids(site)


def test_binds_added_and_removed_keep_the_unchanged_socket(site_factory, tmp_path) -> None:
    port = free_port()
    tcp = f'"127.0.0.1:{port}"'
    site = site_factory(app_block("web", 1, binds=tcp)).start()
    address = site.address("web")
    with Load(address) as load:
        wait_until(lambda: load.ok > 5)
        sock = str(tmp_path / "extra.sock")
        site.write(app_block("web", 1, binds=f'{tcp}, "unix:{sock}"'))
        wait_until(lambda: os.path.exists(sock) and _serves(sock), timeout=30, what="the new bind to serve")
        site.write(app_block("web", 1, binds=tcp))
        wait_until(lambda: not os.path.exists(sock), timeout=30, what="the removed bind to close")
        seen = load.ok
        wait_until(lambda: load.ok > seen + 5)
    assert load.failures == [], site.log()[-4000:]  # the TCP listener was never closed or re-bound
    assert site.log().count(f"listening on tcp://127.0.0.1:{port}") == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serves(path: str) -> bool:
    try:
        return get(path, timeout=2)[0] == 200
    except OSError:
        return False


def test_apps_added_and_removed(site_factory) -> None:
    site = site_factory(app_block("web", 1)).start()
    wait_until(lambda: site.ready("web", 1))
    web_pids = worker_pids(site)
    site.write(app_block("web", 1) + app_block("shop", 2, "shop"))
    wait_until(lambda: site.ready("shop", 2), what="the new app to start")
    assert get(site.address("shop"))[1].startswith("shop ")
    assert web_pids <= worker_pids(site)
    site.write(app_block("web", 1))
    wait_until(lambda: worker_pids(site) == web_pids, what="the removed app's workers to go")
    wait_until(lambda: "closed listener" in site.log(), what="its listener to close")


def test_a_slow_booting_app_rolls_without_a_stall(site_factory) -> None:
    slow = 'module = "slow_import:app"\n'
    text = app_block("web", 2, "v1", extra="").replace('module = "basic:app"\n', slow)
    text = text.replace('env = { TAG = "v1" }', 'env = { TAG = "v1", IMPORT_SECONDS = "2" }')
    site = site_factory(text).start(wait_ready=False)
    wait_until(lambda: site.ready("web", 2), timeout=30)
    address = site.address("web")
    with Load(address) as load:
        wait_until(lambda: load.ok > 10)
        site.write(text.replace('TAG = "v1"', 'TAG = "v2"'))
        wait_until(lambda: load.bodies and load.bodies[-1].startswith("v2") and len(worker_pids(site)) == 2
                   and all(b.startswith("v2") for b in load.bodies[-5:]), timeout=40, what="the roll to finish")
    assert load.failures == [], site.log()[-4000:]  # the master's log tells what happened around a failure
    assert load.max_latency < 1.5  # the import takes 2 s: a stall would show it (this is a correctness bound)


def test_new_code_that_cannot_boot_leaves_the_old_workers_serving(site_factory) -> None:
    site = site_factory(app_block("web", 2), expect=boot_failure("web")).start()
    wait_until(lambda: site.ready("web", 2))
    before = worker_pids(site)
    address = site.address("web")
    with Load(address) as load:
        site.write(app_block("web", 2).replace('module = "basic:app"', 'module = "broken:app"'))
        wait_until(lambda: site.log().count("failed to boot") >= 2, timeout=20)
        seen = load.ok
        wait_until(lambda: load.ok > seen + 10)
    assert load.failures == [], site.log()[-4000:]  # the master's log tells what happened around a failure
    assert before <= worker_pids(site)
    site.write(app_block("web", 2, "v3"))
    wait_until(lambda: not (worker_pids(site) & before) and len(worker_pids(site)) == 2, timeout=30)
    assert get(address)[1].startswith("v3 ")


def test_an_old_worker_lost_during_a_bad_deploy_is_replaced_from_the_old_code(site_factory) -> None:
    site = site_factory(app_block("web", 2), expect=boot_failure("web")).start()
    site.expect(r"app web: worker \d+ died unexpectedly \(killed by SIGKILL\)")
    wait_until(lambda: site.ready("web", 2))
    before = worker_pids(site)
    address = site.address("web")

    def web() -> dict[str, Any]:
        return next(a for a in call(socket_path(site.path, None), Request("status"))["apps"] if a["name"] == "web")

    wait_until(lambda: web()["proven_revision"] == web()["revision"], timeout=15, what="v1 proven healthy")
    site.write(app_block("web", 2, "v2").replace('module = "basic:app"', 'module = "broken:app"'))
    wait_until(lambda: site.log().count("failed to boot") >= 1, timeout=20)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        serving = [w for w in web()["workers"] if w["state"] in ("idle", "busy")]
        return len(serving) == 2 and victim not in {w["pid"] for w in serving}

    wait_until(replaced, timeout=20, what="two workers serving again, the killed one replaced")
    assert {get(address)[1].split()[0] for _ in range(6)} == {"v1"}  # the replacement runs the old code
    site.write(app_block("web", 2, "v3"))  # a fix: the roll to it proceeds as usual
    wait_until(lambda: {get(address)[1].split()[0] for _ in range(4)} == {"v3"}, timeout=30)


def test_a_file_watcher_that_cannot_start_falls_back_to_the_stat_check(site_factory) -> None:
    site = site_factory(app_block("web", 1), expect=[r"cannot watch \S+ for changes \(\[Errno 28\]"])
    refuse = ("import sys\nimport forkserve.watch\n"
              "def start(self): raise OSError(28, 'inotify watch limit reached')\n"
              "forkserve.watch.SiteWatcher.start = start\n"
              "from forkserve.cli import main\nsys.exit(main(['up', sys.argv[1]]))")
    site.log_file = open(site.log_path, "ab")  # noqa: SIM115 - closed by Site.stop
    site.proc = subprocess.Popen([sys.executable, "-c", refuse, str(site.path)], stdout=site.log_file,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    wait_until(lambda: site.ready("web", 1))
    assert "cannot watch" in site.log() and "inotify watch limit reached" in site.log()
    site.write(app_block("web", 2))
    wait_until(lambda: site.ready("web", 2), what="the edit applied without a watcher")


def test_identical_rewrite_and_touch_change_nothing(site_factory) -> None:
    text = app_block("web", 2)
    site = site_factory(text).start()
    wait_until(lambda: site.ready("web", 2))
    before = worker_pids(site)
    site.write(text)
    os.utime(site.path)
    # a barrier: the events above were seen before this later edit (a scale, which restarts nobody either)
    site.write(app_block("web", 3))
    wait_until(lambda: "web scaled 2->3" in site.log(), what="the later edit")
    assert before < worker_pids(site)  # nobody restarted (SIGHUP would roll: see test_deploy)


def test_a_deleted_site_file_keeps_the_site_running(site_factory) -> None:
    site = site_factory(app_block("web", 1), expect=[r"site file \S+ is gone or unreadable"]).start()
    wait_until(lambda: site.ready("web", 1))
    before = worker_pids(site)
    os.unlink(site.path)
    wait_until(lambda: "gone or unreadable" in site.log())
    assert get(site.address("web"))[0] == 200
    assert worker_pids(site) == before
    site.write(app_block("web", 2))
    wait_until(lambda: site.ready("web", 2))


def test_watch_false_ignores_edits_until_hup(site_factory) -> None:
    text = "[server]\nwatch = false\n" + app_block("web", 1)
    site = site_factory(text).start()
    wait_until(lambda: site.ready("web", 1))
    site.write(text.replace("workers = 1", "workers = 2"))
    time.sleep(1.5)  # proving a negative: give a (wrong) watcher time to act
    assert len(worker_pids(site)) == 1
    site.signal(signal.SIGHUP)
    wait_until(lambda: site.ready("web", 2))


def test_a_kubernetes_configmap_swap_is_applied(site_factory, tmp_path) -> None:
    """ConfigMap volumes: site.toml -> ..data/site.toml, and ..data is a symlink swapped atomically."""
    def publish(version: str, text: str) -> None:
        target = tmp_path / f"..{version}"
        target.mkdir()
        (target / "site.toml").write_text(text.replace("@APPS@", str(APPS)))
        (tmp_path / "..data_tmp").symlink_to(target.name)
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")  # the atomic swap the kubelet does

    site = site_factory(app_block("web", 1), name="seed.toml")  # a Site only for its helpers and cleanup
    publish("v1", app_block("web", 1))
    (tmp_path / "site.toml").symlink_to("..data/site.toml")
    site.path = tmp_path / "site.toml"
    site.start()
    wait_until(lambda: site.ready("web", 1))
    publish("v2", app_block("web", 2))
    wait_until(lambda: site.ready("web", 2), what="the swapped ConfigMap to apply")


def test_max_requests_recycles_workers_one_at_a_time_without_failures(site_factory) -> None:
    site = site_factory(app_block("web", 2, extra="max_requests = 30\nworker_class = \"gevent\"")).start()
    address = site.address("web")
    first = worker_pids(site)
    control = socket_path(str(site.path), None)
    ready_counts: list[int] = []
    with Load(address) as load:
        while worker_pids(site) & first:  # until both first workers have been recycled (bounded below)
            snap = call(control, Request("status"))
            ready_counts.append(next(a["ready"] for a in snap["apps"] if a["name"] == "web"))
            assert len(ready_counts) < 600, "the first workers were never recycled"
            time.sleep(0.05)
        seen = load.ok
        wait_until(lambda: load.ok > seen + 20)
    assert load.failures == [], site.log()[-4000:]  # the master's log tells what happened around a failure
    assert min(ready_counts) >= 2  # a replacement is ready before a recycled worker is retired
    assert len({pid_of(b) for b in load.bodies}) > 2
