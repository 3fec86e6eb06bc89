"""`python launch.py cluster-node ... --dry-run`: the `ray start` command and environment a node would get, with
the safe defaults a LAN needs (token auth, no dashboard, no client port), and this project on the workers' path.
Run as a user runs it, through launch.py; nothing is started."""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from modules.paths import REPO_ROOT

# Ray opens its client port only with its client extra (grpc) installed; `--ray-client` needs it.
CLIENT_EXTRA = importlib.util.find_spec("grpc") is not None
SECRET = "s3cr3t-cluster-token-do-not-print"
WORKER_FLAGS = ("--data-dir", "/srv/studio", "--models-dir", "/mnt/my models")

# Each run starts Python and launch.py (a few seconds on a busy machine), so they all start at once, up front.
RUNS: dict[str, tuple[str, ...]] = {
    "head": ("--head", "--dry-run"),
    "dashboard": ("--head", "--dashboard", "--dry-run"),
    "ray-client": ("--head", "--ray-client", "--port", "7000", "--dry-run"),
    "worker": ("--address", "10.1.2.3:6379", "--num-gpus", "2", "--node-ip-address", "10.1.2.9", "--token-file",
               "{token}", "--dry-run", "--", *WORKER_FLAGS),
    "no role": ("--dry-run",),
    "two roles": ("--head", "--address", "10.1.2.3:6379", "--dry-run"),
}


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str

    @property
    def env(self) -> dict[str, str]:
        """The environment lines a dry run prints (`KEY=<shell-quoted value>`), unquoted."""
        lines = self.stdout.strip().splitlines()[:-1]
        return {k: shlex.split(v)[0] for k, v in (line.split("=", 1) for line in lines)}

    @property
    def command(self) -> list[str]:
        return shlex.split(self.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Ran]:
    token = tmp_path_factory.mktemp("ray") / "auth_token"
    token.write_text(SECRET)
    env = {k: v for k, v in os.environ.items() if k != "COMMANDLINE_ARGS"}
    # A token in the environment must not be echoed either; a PYTHONPATH of the user's is kept.
    env.update({"RAY_AUTH_TOKEN": SECRET, "PYTHONPATH": "/opt/extra"})
    started = {
        name: subprocess.Popen([sys.executable, "launch.py", "cluster-node", "--skip-install",
                                *(a.format(token=token) for a in args)],
                               cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, args in RUNS.items()}
    done = {}
    for name, process in started.items():
        out, err = process.communicate(timeout=120)
        done[name] = Ran(process.returncode, out, err)
    done["token"] = Ran(0, str(token), "")
    return done


def ok(runs: dict[str, Ran], name: str) -> Ran:
    ran = runs[name]
    assert ran.returncode == 0, ran.stderr
    return ran


def test_a_head_runs_with_token_auth_no_dashboard_and_no_client_port(runs: dict[str, Ran]) -> None:
    ran = ok(runs, "head")
    command = ran.command
    assert Path(command[0]).name == "ray" and command[1] == "start"
    assert "--head" in command and "--block" in command and "--port=6379" in command
    assert "--include-dashboard=false" in command
    assert not [c for c in command if c.startswith("--dashboard-host")]
    # No client port asked for: Ray opens none unless its client extra is installed (and then says so).
    assert not [c for c in command if c.startswith("--ray-client-server-port")]
    assert ("client port 10001" in ran.stderr) == CLIENT_EXTRA
    assert ran.env["RAY_AUTH_MODE"] == "token"
    # Ray's worker processes import this project; the user's own PYTHONPATH is kept after it.
    assert ran.env["PYTHONPATH"].split(os.pathsep) == [str(REPO_ROOT), "/opt/extra"]
    assert ran.env["SD_STUDIO_WORKER_ARGS"] == ""
    assert "RAY_AUTH_TOKEN_PATH" not in ran.env


def test_the_dashboard_is_bound_to_this_machine_only(runs: dict[str, Ran]) -> None:
    command = ok(runs, "dashboard").command
    assert "--include-dashboard=true" in command and "--dashboard-host=127.0.0.1" in command
    assert "--include-dashboard=false" not in command
    assert not [c for c in command if c.startswith("--ray-client-server-port")]


def test_the_ray_client_port_is_opened_only_when_asked(runs: dict[str, Ran]) -> None:
    if not CLIENT_EXTRA:
        # Without Ray's client extra `ray start` could not open the port: say what to install, start nothing.
        ran = runs["ray-client"]
        assert ran.returncode != 0 and "ray[client]" in ran.stderr and ran.stdout == ""
        return
    command = ok(runs, "ray-client").command
    assert "--ray-client-server-port=10001" in command and "--port=7000" in command
    assert "--include-dashboard=false" in command


def test_a_worker_joins_the_head_with_its_own_app_flags(runs: dict[str, Ran]) -> None:
    ran = ok(runs, "worker")
    command = ran.command
    assert "--address=10.1.2.3:6379" in command and "--block" in command
    assert "--num-gpus=2" in command and "--node-ip-address=10.1.2.9" in command
    assert "--head" not in command and not [c for c in command if "dashboard" in c or "client-server" in c]
    # The flags after "--" are what this node's workers build their engine from (read back with shlex.split).
    assert shlex.split(ran.env["SD_STUDIO_WORKER_ARGS"]) == list(WORKER_FLAGS)
    assert not set(WORKER_FLAGS) & set(command)
    assert ran.env["RAY_AUTH_MODE"] == "token"
    assert ran.env["PYTHONPATH"].split(os.pathsep)[0] == str(REPO_ROOT)


def test_a_token_file_is_passed_by_path_never_by_content(runs: dict[str, Ran]) -> None:
    assert ok(runs, "worker").env["RAY_AUTH_TOKEN_PATH"] == runs["token"].stdout
    for name in RUNS:
        assert SECRET not in runs[name].stdout + runs[name].stderr, f"the {name} run printed the token"


@pytest.mark.parametrize("name", ["no role", "two roles"])
def test_without_exactly_one_role_it_fails_with_usage(runs: dict[str, Ran], name: str) -> None:
    ran = runs[name]
    assert ran.returncode != 0
    assert "usage: launch.py cluster-node" in ran.stderr
    assert "--head" in ran.stderr and "--address" in ran.stderr
    assert "ray start" not in ran.stdout
