#!/usr/bin/env python3
"""SD Studio launcher: sets up ./venv, installs the requirements when they changed, then starts the app.

    python launch.py [flags]          install what is needed (first run), then start the app
    python launch.py test [pytest…]   the same setup plus test tools, then run the test suite

Only the standard library is used here: this file runs with the system Python before the venv exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV_DIR = Path(os.environ.get("VENV_DIR") or ROOT / "venv")
MARKER = VENV_DIR / ".sdstudio-installed.json"
APP_REQUIREMENTS = ("requirements.txt",)
TEST_REQUIREMENTS = ("requirements.txt", "requirements-dev.txt")
MIN_PYTHON = (3, 10)


def main() -> int:
    args = sys.argv[1:]
    command, args = ("test", args[1:]) if args[:1] == ["test"] else ("app", args)
    if sys.version_info < MIN_PYTHON:
        print(f"SD Studio needs Python {'.'.join(map(str, MIN_PYTHON))} or newer (3.11 recommended); "
              f"this is {sys.version.split()[0]}.", file=sys.stderr)
        return 1

    python = venv_python()
    if not python.exists():
        print(f"Creating the virtual environment in {VENV_DIR} ...", flush=True)
        venv.create(VENV_DIR, with_pip=True)
    if not _skip_install(args):
        ok = install_requirements(python, TEST_REQUIREMENTS if command == "test" else APP_REQUIREMENTS)
        if not ok:
            return 1
    if Path(sys.prefix).resolve() != VENV_DIR.resolve():
        return _rerun_inside_venv(python)

    if command == "test":
        return run_tests(python, args)
    sys.path.insert(0, str(ROOT))
    from modules.app import main as app_main

    return app_main(args)


def venv_python() -> Path:
    return VENV_DIR / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _skip_install(args: list[str]) -> bool:
    return "--skip-install" in args + shlex.split(os.environ.get("COMMANDLINE_ARGS", ""))


def install_requirements(python: Path, files: tuple[str, ...]) -> bool:
    """pip install each requirements file whose content changed since the last successful install."""
    installed = _read_marker()
    for name in files:
        digest = hashlib.sha256((ROOT / name).read_bytes()).hexdigest()
        if installed.get(name) == digest:
            continue
        print(f"Installing {name} (first run, or the file changed) ...", flush=True)
        result = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-r",
                                 str(ROOT / name)], cwd=ROOT)
        if result.returncode != 0:
            print(f"\npip could not install {name} (exit code {result.returncode}); see its output above. "
                  "Nothing was started. Fix the problem and run the same command again.", file=sys.stderr)
            return False
        installed[name] = digest
        MARKER.write_text(json.dumps(installed, indent=2))
    return True


def _read_marker() -> dict[str, str]:
    try:
        data = json.loads(MARKER.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _rerun_inside_venv(python: Path) -> int:
    argv = [str(python), str(Path(__file__).resolve()), *sys.argv[1:]]
    if os.name == "nt":
        return subprocess.call(argv)
    os.execv(argv[0], argv)
    return 1  # not reached


def run_tests(python: Path, pytest_args: list[str]) -> int:
    _ensure_chromium()
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    return subprocess.call([str(python), "-m", "pytest", *pytest_args], cwd=ROOT, env=env)


def _ensure_chromium() -> None:
    """The browser tests drive Debian's chromium. Install it when we can (root with apt), else say so."""
    if shutil.which("chromium"):
        return
    can_apt = shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0
    if not can_apt:
        print("note: chromium is not installed, so the browser tests will be skipped "
              "(install Debian's 'chromium' package to run them).", flush=True)
        return
    print("Installing chromium for the browser tests ...", flush=True)
    quiet = {"stdout": subprocess.DEVNULL}
    subprocess.run(["apt-get", "update", "-qq"], **quiet)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                   **quiet)


if __name__ == "__main__":
    sys.exit(main())
