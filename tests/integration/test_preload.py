"""preload = true: workers forked from a per-app, per-revision preload process; real processes and sockets."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from tests.integration.conftest import alive, boot_failure, get, pid_of, wait_until
from tests.integration.test_reconcile import Load


def site_text(tag: str = "v1", module: str = "basic:app", workers: int = 2, worker_class: str = "sync") -> str:
    return f"""
[apps.web]
module = "{module}"
chdir = "@APPS@"
binds = ["127.0.0.1:0"]
workers = {workers}
worker_class = "{worker_class}"
preload = true
env = {{ TAG = "{tag}", MARK_DIR = "@DIR@" }}

[apps.plain]
module = "basic:app"
chdir = "@APPS@"
binds = ["127.0.0.1:0"]
"""


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def title(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ").strip()


def serving_pids(address: tuple[str, int], count: int) -> set[int]:
    return {pid_of(get(address)[1]) for _ in range(count)}


def test_preloaded_workers_are_forked_by_the_apps_preload_process(site_factory) -> None:
    site = site_factory(site_text(worker_class="gevent")).start()
    wait_until(lambda: site.ready("web", 2))
    worker = pid_of(get(site.address("web"))[1])
    zygote = parent_of(worker)
    assert zygote != site.pid and parent_of(zygote) == site.pid
    assert title(zygote).startswith("forkserve: preload [web]")
    assert parent_of(pid_of(get(site.address("plain"))[1])) == site.pid  # the other app is not preloaded


def test_a_code_change_rolls_through_a_new_preload_process_without_failures(site_factory) -> None:
    site = site_factory(site_text("v1")).start()
    wait_until(lambda: site.ready("web", 2))
    address = site.address("web")
    old_zygote = parent_of(pid_of(get(address)[1]))
    with Load(address) as load:
        wait_until(lambda: load.ok > 10)
        site.write(site_text("v2"))
        wait_until(lambda: load.bodies and all(b.startswith("v2") for b in load.bodies[-10:]), timeout=30,
                   what="the new revision to serve")
        wait_until(lambda: not alive(old_zygote), timeout=30, what="the old preload process to retire")
    assert load.failures == [], site.log()[-4000:]  # the master's log tells what happened around a failure
    assert parent_of(pid_of(get(address)[1])) != old_zygote


def test_killed_workers_and_a_killed_preload_process_are_replaced(site_factory) -> None:
    site = site_factory(site_text(), expect=[
        r"app web: worker \d+ died unexpectedly \(killed by SIGKILL\)",
        r"app web: preload process \d+ died \(killed by SIGKILL\)",
        r"master \d+ is gone: exiting",  # the workers of the killed preload process (their parent) leave
    ]).start()
    wait_until(lambda: site.ready("web", 2))
    address = site.address("web")
    victim = pid_of(get(address)[1])
    zygote = parent_of(victim)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in serving_pids(address, 6) and len(serving_pids(address, 8)) == 2,
               what="a replacement worker")
    os.kill(zygote, signal.SIGKILL)
    wait_until(lambda: _zygotes_of(address) - {zygote} and zygote not in _zygotes_of(address), timeout=20,
               what="workers from a new preload process")
    assert get(site.address("plain"))[0] == 200


def test_a_preload_process_that_stops_answering_is_replaced_and_the_master_stays_responsive(site_factory) -> None:
    site = site_factory(site_text(), expect=[
        r"app web: preload process \d+ did not answer a spawn request",
        r"app web: preload process \d+ died",
        r"master \d+ is gone: exiting",  # the workers of the killed preload process (their parent) leave
    ]).start()
    wait_until(lambda: site.ready("web", 2))
    address, plain = site.address("web"), site.address("plain")
    zygote = parent_of(pid_of(get(address)[1]))
    os.kill(zygote, signal.SIGSTOP)  # wedged: it can answer no spawn request
    try:
        site.write(site_text(workers=3))  # scale up: the master asks the wedged zygote for a worker
        wait_until(lambda: "did not answer a spawn request" in site.log(), timeout=20)
        assert get(plain)[0] == 200  # the master, and the other app, carried on
        wait_until(lambda: zygote not in _zygotes_of(address) and len(serving_pids(address, 12)) == 3, timeout=20,
                   what="three workers from a new preload process")
    finally:
        if alive(zygote):
            os.kill(zygote, signal.SIGCONT)


def _zygotes_of(address: tuple[str, int]) -> set[int]:
    try:
        return {parent_of(pid) for pid in serving_pids(address, 4)}
    except (OSError, FileNotFoundError):
        return set()


def test_a_preloaded_app_that_cannot_import_backs_off_and_the_other_app_serves(site_factory) -> None:
    site = site_factory(site_text(module="broken:app"), expect=boot_failure("web")).start(wait_ready=False)
    wait_until(lambda: site.log().count("preload process") >= 2 and "failed to boot" in site.log(), timeout=20)
    assert "this app cannot be imported" in site.log()
    wait_until(lambda: site.ready("plain", 1))
    assert get(site.address("plain"))[0] == 200


def test_term_to_the_whole_process_group_lets_a_preloaded_request_finish(site_factory) -> None:
    site = site_factory(site_text()).start()
    wait_until(lambda: site.ready("web", 2))
    address = site.address("web")
    result: dict[str, object] = {}
    thread = threading.Thread(target=lambda: result.update(response=get(address, "/slow?1.5", timeout=15)))
    thread.start()
    wait_until(lambda: list(site.dir.glob("slow-*")), what="the slow request to reach a worker")
    os.killpg(site.pid, signal.SIGTERM)  # as systemd (KillMode=control-group) or a shell's Ctrl-C would
    thread.join(timeout=15)
    assert result["response"][0] == 200  # type: ignore[index]
    assert site.proc is not None and site.proc.wait(timeout=15) == 0


HOOKS_APP = '''
import os
import sys


def app(environ, start_response):
    hooks = sum(type(finder).__name__ == "_PatchSslOnImport" for finder in sys.meta_path)
    paths = sys.path.count(os.environ["APP_DIR"])
    body = f"hooks={hooks} paths={paths} pid={os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def test_gevent_workers_forked_from_a_preload_process_patch_only_once(site_factory, tmp_path: Path) -> None:
    """The preload process imports the app (and monkey-patches) once; its workers do neither again: no
    "Patching more than once" MonkeyPatchWarning, one ssl import hook, the app's paths on sys.path once."""
    (tmp_path / "hooks_app.py").write_text(HOOKS_APP)
    site = site_factory("""
        [apps.web]
        module = "hooks_app:app"
        chdir = "@DIR@"
        pythonpath = ["@APPS@"]
        binds = ["127.0.0.1:0"]
        workers = 2
        worker_class = "gevent"
        preload = true
        env = { APP_DIR = "@APPS@" }
    """).start()
    wait_until(lambda: site.ready("web", 2))
    address = site.address("web")
    bodies: dict[int, str] = {}

    def both_answered() -> bool:
        body = get(address)[1]
        bodies[pid_of(body)] = body
        return len(bodies) == 2

    wait_until(both_answered, what="both workers to answer")
    assert "MonkeyPatchWarning" not in site.log(), site.log()
    for body in bodies.values():
        assert body.startswith("hooks=1 paths=1 "), body
