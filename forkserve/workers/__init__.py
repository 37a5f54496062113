"""The worker side: everything that runs in a forked child. gevent is imported only in gevent workers.

Contract with the master (see `forkserve.process`):
    forkserve.workers.base.run(spec, listeners, channel, master_pid) -> NoReturn
is called in the child right after fork, with
    spec       forkserve.spec.AppSpec of this worker's app and revision
    listeners  the listening sockets of this app (already bound and listening, in the master)
    channel    forkserve.channel.WorkerEnd: heartbeat / record / send("ready" | "recycle" | "boot_error")
    master_pid to notice the master's death (exit when os.getppid() != master_pid)
It never returns: it ends with os._exit(code), code one of forkserve.workers.base.EXIT_* .
With `preload = true` the master forks `forkserve.workers.zygote.run_zygote` instead, which imports the app once
and forks the workers itself.

Modules:
    base          the worker process: boot, heartbeat, logs, exit codes; `import_app` (once) vs `Worker.start`
    registry      worker class name -> module, imported lazily (base imports no worker class)
    sync          one request at a time, Connection: close
    gevent        a greenlet per connection, keep-alive (`GeventServer`)
    gevent_patch  gevent's monkey-patching, lighter than patch_all(): ssl on first import, plugins without
                  importlib.metadata
    zygote        the preload process
"""
