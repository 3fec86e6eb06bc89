"""Thin, safe wrappers around the `git` command line for installing and updating extensions.

Every call is a list argv (no shell), has a timeout, never waits for a password prompt, and turns a failure
into a `UserError` carrying the tail of git's own message. We call the git binary rather than a library so
that the user's git setup (credentials, proxies, SSH keys) works the way it does in their terminal.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from modules.errors import UserError

logger = logging.getLogger(__name__)

# Schemes a user may paste into "Install from URL". `ext::` and `fd::` are left out on purpose: `ext::`
# runs an arbitrary command.
URL_SCHEMES = ("https", "http", "git", "ssh", "file")
# The same list in the form git itself enforces, so a transport we refused here cannot come back in through
# a redirect, a submodule or an `insteadOf` rewrite.
_ALLOWED_PROTOCOLS = "https:http:git:ssh:file"
_SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9][A-Za-z0-9.-]*:[^\s]+$")
_BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/+-]{0,199}$")
_CREDENTIALS_IN_URL = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)

DEFAULT_TIMEOUT_S = 60.0
_TAIL_LINES = 15
_TAIL_CHARS = 2000


class GitNotFound(UserError):
    """The `git` program is missing, so nothing git-based can work."""


@dataclass(frozen=True)
class Git:
    """Runs git commands with a default timeout, in a repository folder or (for `clone`) anywhere."""

    timeout_s: float = DEFAULT_TIMEOUT_S

    def run(self, args: list[str], cwd: Path | None = None, timeout_s: float | None = None) -> str:
        """Run `git <args>` and return its stdout, stripped; raise UserError on any failure."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        # Checked here because subprocess reports a missing cwd as FileNotFoundError, like a missing git.
        if cwd is not None and not cwd.is_dir():
            raise UserError(f"{cwd} is not a folder")
        argv = ["git", *args]
        try:
            proc = subprocess.run(
                argv,
                cwd=cwd,
                env=_git_env(cwd),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                encoding="utf-8",
                errors="replace",
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            raise GitNotFound("git is not installed or not on PATH; extensions from a URL need git") from None
        except subprocess.TimeoutExpired:
            raise UserError(f"git {args[0]} did not finish within {timeout:.0f} s and was stopped") from None
        if proc.returncode != 0:
            detail = tail(proc.stderr or proc.stdout)
            logger.info("git %s failed (%d) in %s: %s", args[0], proc.returncode, cwd, detail)
            raise UserError(f"git {args[0]} failed: {detail or f'exit code {proc.returncode}'}")
        return proc.stdout.strip()


def _git_env(cwd: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    # Without these a private or mistyped URL makes git wait forever for a password nobody can type.
    env["GIT_TERMINAL_PROMPT"] = "0"
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    env["GIT_ALLOW_PROTOCOL"] = _ALLOWED_PROTOCOLS
    # git's messages reach users and bug reports; one language keeps them searchable.
    env["LC_ALL"] = "C"
    if cwd is not None:
        # An extension folder without its own .git must never make git act on a repository above it
        # (for example the app's own checkout).
        env["GIT_CEILING_DIRECTORIES"] = str(Path(cwd).resolve().parent)
    return env


def tail(text: str) -> str:
    """The last lines of a command's output, with any credentials inside URLs masked."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    out = "\n".join(lines[-_TAIL_LINES:])[-_TAIL_CHARS:]
    return redact(out)


def redact(text: str) -> str:
    """Mask `user:token@` in URLs so tokens never reach logs or the UI."""
    return _CREDENTIALS_IN_URL.sub(r"\1***@", text)


def validate_url(url: str) -> str:
    """Return the URL to hand to `git clone`, or raise UserError if it is not an accepted repository address.

    Accepted: https://, http://, git://, ssh://, file:// URLs, scp-style `user@host:path`, and existing local
    folders (returned as absolute paths so a colon in the name cannot turn them into an SSH address).
    """
    url = url.strip()
    if not url:
        raise UserError("enter a git repository URL", field="url")
    # A leading "-" would be read by git as an option (argument injection); whitespace and control characters
    # have no place in a URL and hide tricks in logs.
    if url.startswith("-"):
        raise UserError("a repository URL cannot start with '-'", field="url")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise UserError("a repository URL cannot contain spaces or control characters", field="url")
    if "://" in url:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in URL_SCHEMES:
            allowed = ", ".join(f"{s}://" for s in URL_SCHEMES)
            raise UserError(f"unsupported URL scheme {scheme!r}; use {allowed} or user@host:path", field="url")
        if scheme != "file" and not parts.hostname:
            raise UserError(f"{redact(url)} has no host name", field="url")
        if parts.hostname and parts.hostname.startswith("-"):
            raise UserError("a host name cannot start with '-'", field="url")
        return url
    if _SCP_LIKE.match(url):
        return url
    if "::" in url:
        # git's `<transport>::<address>` form, e.g. `ext::sh -c ...`.
        raise UserError("remote-helper addresses (transport::address) are not accepted", field="url")
    try:
        local = Path(url).expanduser()
        is_folder = local.is_dir()
    except (OSError, RuntimeError):
        # `~nosuchuser` (RuntimeError) or a name past the file system's limit (ENAMETOOLONG) is no folder here;
        # left to escape they turned a typo into a 500.
        is_folder = False
    if is_folder:
        return str(local.resolve())
    raise UserError(
        f"{redact(url)} is not a repository URL (https://, http://, git://, ssh://, file://, user@host:path) "
        "or an existing local folder",
        field="url",
    )


def validate_branch(branch: str) -> str:
    """Return the branch (or tag) name, or raise UserError if it could be mistaken for an option or a path trick."""
    branch = branch.strip()
    if not _BRANCH.match(branch) or ".." in branch or branch.endswith((".lock", "/", ".")) or "//" in branch:
        raise UserError(f"{branch!r} is not a valid branch name", field="branch")
    return branch


def clone(git: Git, url: str, dest: Path, branch: str | None, timeout_s: float) -> None:
    """Shallow-clone `url` (already validated) into `dest`, which must not exist yet."""
    args = ["clone", "--depth", "1", "--quiet"]
    if branch:
        args += ["--branch", branch]
    # "--" ends option parsing: the URL and the folder can never be taken for options.
    args += ["--", url, str(dest)]
    git.run(args, timeout_s=timeout_s)


@dataclass(frozen=True)
class Repo:
    """The git work tree of one installed extension."""

    git: Git
    folder: Path

    def _run(self, *args: str, timeout_s: float | None = None) -> str:
        return self.git.run(list(args), cwd=self.folder, timeout_s=timeout_s)

    def is_repo_root(self) -> bool:
        """True if the folder is itself the top of a git work tree (not merely inside one)."""
        if not (self.folder / ".git").exists():
            return False
        try:
            top = self._run("rev-parse", "--show-toplevel")
        except GitNotFound:
            raise
        except UserError:
            return False
        return Path(top).resolve() == self.folder.resolve()

    def head(self) -> str:
        """Full sha of HEAD."""
        return self._run("rev-parse", "--verify", "HEAD")

    def short(self, rev: str) -> str:
        """Abbreviated sha of `rev`."""
        return self._run("rev-parse", "--short", "--verify", rev)

    def branch(self) -> str:
        """Checked-out branch name, or "" for a detached HEAD (e.g. a clone of a tag)."""
        name = self._run("rev-parse", "--abbrev-ref", "HEAD")
        return "" if name == "HEAD" else name

    def upstream(self) -> str:
        """The upstream ref of the current branch (e.g. "origin/main"), or "" if it has none."""
        try:
            return self._run("rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{u}")
        except UserError:
            return ""

    def remote_url(self, upstream_ref: str) -> str:
        """URL of the remote behind `upstream_ref`, credentials masked; "" if unknown."""
        remote = upstream_ref.split("/", 1)[0] if upstream_ref else "origin"
        try:
            return redact(self._run("remote", "get-url", remote))
        except UserError:
            return ""

    def fetch(self, timeout_s: float) -> None:
        """Fetch the current branch's remote."""
        self._run("fetch", "--quiet", timeout_s=timeout_s)

    def behind(self, upstream_ref: str) -> int:
        """Commits on `upstream_ref` that HEAD does not have."""
        return int(self._run("rev-list", "--count", f"HEAD..{upstream_ref}") or "0")

    def has_local_changes(self) -> bool:
        """True if tracked files differ from HEAD. Untracked files (caches, outputs) do not count."""
        return bool(self._run("status", "--porcelain", "--untracked-files=no"))

    def fast_forward(self, upstream_ref: str) -> None:
        """Move HEAD to `upstream_ref` only if that needs no merge; raise UserError otherwise."""
        self._run("merge", "--ff-only", "--quiet", upstream_ref)

    def reset_hard(self, sha: str) -> None:
        """Put HEAD and the work tree back at `sha`."""
        self._run("reset", "--hard", "--quiet", sha)
