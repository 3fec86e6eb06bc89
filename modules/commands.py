"""`python launch.py <command> ...`: command-line tools that extensions add (e.g. `sadtalker`).

A command runs with the same services as the server (settings, model folders, the job queue and the device
manager) but serves nothing: it submits its work to the queue, shows progress, and exits with a status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence

from modules.cli import CliError
from modules.errors import UserError
from modules.services import build_services


def is_command(argv: Sequence[str]) -> bool:
    """Flags start with "-"; a first word that does not is a command name."""
    return bool(argv) and not argv[0].startswith("-")


def run(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Run command `argv[0]`. The app's own flags (`--data-dir`, `--device`, ..., also from COMMANDLINE_ARGS)
    set up the services as for the server; every other argument is the command's."""
    name = argv[0]
    if name == "cluster-node":  # the one core command; it needs no services, only Ray's own launcher
        from modules.cluster import node

        return node.main(argv[1:], env)
    rest: list[str] = []
    try:
        services = build_services(argv[1:], env, unknown_out=rest)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    commands = services.extensions.commands()
    if name not in commands:
        known = ", ".join(sorted(commands)) or "none (no extension adds one)"
        print(f"error: unknown command '{name}'. Commands: {known}. Flags for the app start with '--'.",
              file=sys.stderr)
        return 2
    record, command = commands[name]
    parser = argparse.ArgumentParser(prog=f"launch.py {name}", description=command.help)
    command.configure(parser)
    args = parser.parse_args(rest)
    try:
        return command.run(args, record.api.studio)  # type: ignore[union-attr]
    except UserError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 1
    finally:
        services.jobs.stop()
        services.download_jobs.stop()
