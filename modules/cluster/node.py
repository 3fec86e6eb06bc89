"""`python launch.py cluster-node`: make this machine a node of the studio's Ray cluster.

It runs `ray start` from the project's own environment so Ray's worker processes import this project (the
workers are `modules.cluster.worker`), with the app flags for this node's workers, and with the safe defaults a
LAN needs: token authentication on, and Ray's dashboard off (or on 127.0.0.1 only). Ray's client port opens only
when Ray's client extra is installed, which the project does not install; `--ray-client` asks for it. It stays
in the foreground; Ctrl+C stops the node.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

from modules.cluster.worker import WORKER_ARGS_ENV
from modules.paths import REPO_ROOT

DEFAULT_TOKEN = Path("~/.ray/auth_token")


def use_cluster_token(environ: MutableMapping[str, str]) -> None:
    """`cluster-node` starts every node with token auth, so a studio on a machine that has the token must
    present it. Ray reads this when it is imported, so call it before importing Ray."""
    if "RAY_AUTH_MODE" not in environ and DEFAULT_TOKEN.expanduser().is_file():
        environ["RAY_AUTH_MODE"] = "token"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="launch.py cluster-node",
        description="Start a Ray node for SD Studio: the head (on the studio server) or a GPU worker machine.",
        epilog="App flags for this node's workers go after '--', e.g. -- --data-dir /srv/studio --models-dir "
               "/mnt/models. See README 'Cluster'.")
    role = p.add_mutually_exclusive_group(required=True)
    role.add_argument("--head", action="store_true", help="start the head node (run it on the studio server)")
    role.add_argument("--address", metavar="HOST:PORT", help="join the head at this address (its port 6379)")
    p.add_argument("--port", type=int, default=6379, help="the head's port (default 6379; open it to the workers)")
    p.add_argument("--node-ip-address", help="this machine's LAN address, when it has several")
    p.add_argument("--num-gpus", type=int, help="GPUs Ray may use here (default: all it finds)")
    p.add_argument("--dashboard", action="store_true", help="start Ray's dashboard, bound to 127.0.0.1 only")
    p.add_argument("--ray-client", action="store_true",
                   help="open Ray's client port 10001 on all interfaces (only for --cluster ray://...)")
    p.add_argument("--token-file", type=Path,
                   help=f"the cluster's auth token (default {DEFAULT_TOKEN}; copy the head's file to each worker)")
    p.add_argument("--dry-run", action="store_true", help="print the command and its environment, start nothing")
    p.add_argument("--skip-install", action="store_true", help=argparse.SUPPRESS)  # launch.py's own flag
    p.add_argument("worker_flags", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def ray_command(args: argparse.Namespace) -> list[str]:
    ray = str(Path(sys.executable).with_name("ray"))
    cmd = [ray, "start", "--block", "--disable-usage-stats"]
    if args.head:
        cmd += ["--head", f"--port={args.port}"]
        if args.ray_client:
            cmd += ["--ray-client-server-port=10001"]
        cmd += ["--include-dashboard=true", "--dashboard-host=127.0.0.1"] if args.dashboard else \
            ["--include-dashboard=false"]
    else:
        cmd += [f"--address={args.address}"]
    if args.node_ip_address:
        cmd += [f"--node-ip-address={args.node_ip_address}"]
    if args.num_gpus is not None:
        cmd += [f"--num-gpus={args.num_gpus}"]
    return cmd


def node_env(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, str]:
    worker_flags = [f for f in args.worker_flags if f != "--"]
    python_path = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    out = {**env, "PYTHONPATH": python_path, "RAY_AUTH_MODE": "token", WORKER_ARGS_ENV: shlex.join(worker_flags)}
    if args.token_file:
        out["RAY_AUTH_TOKEN_PATH"] = str(args.token_file.expanduser())
    return out


def main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    args = parser().parse_args(list(argv))
    client_installed = importlib.util.find_spec("grpc") is not None  # Ray opens its client port iff it is there
    if args.ray_client and not client_installed:
        print("error: --ray-client needs Ray's client extra: venv/bin/pip install 'ray[client]==2.60.0'",
              file=sys.stderr)
        return 2
    if args.head and client_installed and not args.ray_client:
        print("warning: Ray's client extra (grpcio) is installed, so Ray opens its client port 10001 on this "
              "machine; it is protected by the cluster token, but firewall it or uninstall grpcio to close it.",
              file=sys.stderr)
    command, full_env = ray_command(args), node_env(args, env)
    if args.dry_run:
        shown = ("PYTHONPATH", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", WORKER_ARGS_ENV)
        for key in shown:
            if key in full_env:
                print(f"{key}={shlex.quote(full_env[key])}")
        print(shlex.join(command))
        return 0
    if args.head and not args.token_file:
        # The token is the cluster's password: without it anyone who reaches port 6379 could run code here.
        subprocess.run([command[0], "get-auth-token", "--generate"], env=full_env, check=True,
                       stdout=subprocess.DEVNULL)
        print(f"Cluster token: {DEFAULT_TOKEN.expanduser()}. Copy it to the same place on every worker machine "
              "(or pass --token-file there).", flush=True)
    return subprocess.call(command, env=full_env)
