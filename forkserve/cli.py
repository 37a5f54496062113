"""Command line: argument parsing and exit codes only. Each command lives in its own module.

Exit codes: 0 success; 1 the thing checked is not right (invalid config, plan has changes, not ready);
2 usage or I/O error (argparse uses 2 too); 3 `up` could not start (invalid config, bind failure).
"""

from __future__ import annotations

import argparse
import sys


def _up_arguments(up: argparse.ArgumentParser) -> argparse.ArgumentParser:
    up.add_argument("site", help="site file (.toml, .yaml or .yml)")
    up.set_defaults(command="up")
    return up


def _up_parser() -> argparse.ArgumentParser:
    """`forkserve up` alone: what its subparser in `_parser()` is (same usage, help and errors), built without
    the other seven. Building them all costs ~5 ms (a help formatter and gettext lookups each), on start-up."""
    return _up_arguments(argparse.ArgumentParser(prog="forkserve up"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forkserve", description="Pre-fork WSGI server for several apps.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _up_arguments(sub.add_parser("up", help="run the site in the foreground (a master and its workers)"))

    check = sub.add_parser("check", help="validate site files; exit 1 if any is invalid")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.add_argument("--format", choices=("text", "json", "github"), default="text")
    check.add_argument("--import", dest="do_import", action="store_true",
                       help="also import each app in a throwaway subprocess and check it is callable")

    sub.add_parser("schema", help="print the JSON Schema of site files")

    for name, text in (("status", "show what the running master wants and runs"),
                       ("reload", "make the running master re-read its site file"),
                       ("upgrade", "re-execute the running master with the forkserve now installed, "
                                   "keeping every socket; the workers are replaced once the new ones are ready"),
                       ("stop", "stop the running master (graceful unless --fast)")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("site", nargs="?", help="site file of the master (default: ./site.toml)")
        cmd.add_argument("--socket", help="control socket path (default: derived from the site file)")
        if name == "status":
            cmd.add_argument("--json", action="store_true", help="machine-readable output")
            cmd.add_argument("--ready", action="store_true",
                             help="exit 0 only when every app has its desired ready workers")
        if name == "reload":
            cmd.add_argument("apps", nargs="*", metavar="APP", help="apps whose code to roll (default: all)")
        if name == "stop":
            cmd.add_argument("--fast", action="store_true")

    wait = sub.add_parser("wait", help="wait until the apps run their desired revision, all workers ready; "
                                       "exit 0 done, 1 failing, 2 timeout or error")
    wait.add_argument("site", help="site file of the master")
    wait.add_argument("apps", nargs="*", metavar="APP", help="apps to wait for (default: every app of the site)")
    wait.add_argument("--timeout", type=float, default=300.0, metavar="S", help="give up after S seconds (300)")
    wait.add_argument("--settle", type=float, default=2.0, metavar="S",
                      help="when the first answer is already 'done' or 'failing', watch S seconds more before "
                           "believing it, so a change the master has not noticed yet is not missed "
                           "(2; 0 after `forkserve reload`)")
    wait.add_argument("--socket", help="control socket path (default: derived from the site file)")

    plan = sub.add_parser("plan", help="show what applying SITE would change; exit 0 none, 1 some, 2 error")
    plan.add_argument("site")
    plan.add_argument("--socket", help="control socket path (default: derived from the site file)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _up_parser().parse_args(argv[1:]) if argv[:1] == ["up"] else _parser().parse_args(argv)
    if args.command == "up":
        from forkserve.config.validate import start_validation

        early = start_validation(args.site)  # the child validates while this process imports the master
        from forkserve.master import run_site

        return run_site(args.site, early)
    if args.command == "check":
        from forkserve.config.check import run_check

        return run_check(args.files, fmt=args.format, do_import=args.do_import)
    if args.command == "schema":
        from forkserve.config.schema import schema_text

        sys.stdout.write(schema_text())
        return 0
    from forkserve.control import client

    return client.run(args)


if __name__ == "__main__":
    sys.exit(main())
