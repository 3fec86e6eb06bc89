"""ExtensionInstaller: installs from git, folders and archives; refuses unsafe sources; updates and rolls back."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from modules.errors import UserError
from modules.extensions import install as install_module
from modules.extensions.git import GitNotFound, validate_url
from modules.extensions import archive as archive_module
from modules.extensions.install import ExtensionInstaller
from modules.extensions.manifest import ManifestError

MANIFEST = 'id = "hello"\nname = "Hello"\nversion = "{version}"\napi_version = 1\n{extra}'
MAIN_PY = "def register(api):\n    return None\n"


def manifest_text(version: str = "1.0.0", extra: str = "") -> str:
    return MANIFEST.format(version=version, extra=extra)


def git(cwd: Path, *args: str) -> str:
    argv = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", *args]
    return subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def write_extension(folder: Path, manifest: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "extension.toml").write_text(manifest if manifest is not None else manifest_text(), encoding="utf-8")
    (folder / "main.py").write_text(MAIN_PY, encoding="utf-8")
    return folder


class PipRecorder:
    """Stands in for pip: records each call, optionally failing."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, requirements: list[str]) -> None:
        self.calls.append(list(requirements))
        if self.fail:
            raise UserError("pip could not install: no matching distribution")


@pytest.fixture(autouse=True)
def hermetic_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The developer's own git config (signing, hooks, templates) must not change what the tests see.
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    """A git repository holding a valid extension on `main`, plus a `dev` branch with version 2.0.0."""
    repo = write_extension(tmp_path / "upstream")
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "first")
    git(repo, "checkout", "-q", "-b", "dev")
    (repo / "extension.toml").write_text(manifest_text("2.0.0"), encoding="utf-8")
    commit_all(repo, "dev version")
    git(repo, "checkout", "-q", "main")
    return repo


@pytest.fixture
def pip() -> PipRecorder:
    return PipRecorder()


@pytest.fixture
def installer(tmp_path: Path, pip: PipRecorder) -> ExtensionInstaller:
    return ExtensionInstaller(tmp_path / "data" / "extensions", tmp_path / "data" / "tmp", pip_runner=pip)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def assert_nothing_left(installer: ExtensionInstaller) -> None:
    assert listing(installer.extensions_dir) == []
    assert listing(installer.tmp_dir) == []


# -- git -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_url", [False, True])
def test_install_from_git_main_branch(installer: ExtensionInstaller, upstream: Path, as_url: bool) -> None:
    url = upstream.as_uri() if as_url else str(upstream)
    manifest = installer.install_from_git(url)
    target = installer.extensions_dir / "hello"
    assert manifest.id == "hello" and manifest.version == "1.0.0"
    assert (target / "main.py").read_text() == MAIN_PY
    assert (target / ".git").is_dir()
    assert listing(installer.tmp_dir) == []


def test_install_from_git_with_branch(installer: ExtensionInstaller, upstream: Path) -> None:
    manifest = installer.install_from_git(upstream.as_uri(), branch="dev")
    assert manifest.version == "2.0.0"
    assert git(installer.extensions_dir / "hello", "rev-parse", "--abbrev-ref", "HEAD") == "dev"


def test_install_from_git_into_named_folder(installer: ExtensionInstaller, upstream: Path) -> None:
    installer.install_from_git(upstream.as_uri(), folder_name="hello-fork")
    assert (installer.extensions_dir / "hello-fork" / "extension.toml").is_file()


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "", "x" * 200])
def test_unsafe_folder_name_refused(installer: ExtensionInstaller, upstream: Path, name: str) -> None:
    with pytest.raises(UserError, match="folder name"):
        installer.install_from_git(upstream.as_uri(), folder_name=name)
    assert_nothing_left(installer)


def test_missing_branch_is_a_user_error(installer: ExtensionInstaller, upstream: Path) -> None:
    with pytest.raises(UserError, match="git clone failed"):
        installer.install_from_git(upstream.as_uri(), branch="no-such-branch")
    assert_nothing_left(installer)


@pytest.mark.parametrize(
    "url",
    [
        "--upload-pack=touch /tmp/pwned",
        "-uhttps://example.com/x",
        "https://example.com/a b",
        "https://example.com/a\nb",
        "ext::sh -c touch% /tmp/pwned",
        "ext::sh",
        "ftp://example.com/repo",
        "https:///no-host",
        "not-a-url-or-folder",
    ],
)
def test_unsafe_or_unknown_urls_refused(installer: ExtensionInstaller, url: str) -> None:
    with pytest.raises(UserError):
        installer.install_from_git(url)
    assert_nothing_left(installer)


@pytest.mark.parametrize(
    "url",
    ["https://github.com/a/b", "http://host/x.git", "git://host/x", "ssh://git@host/x", "git@github.com:a/b.git"],
)
def test_accepted_url_forms(url: str) -> None:
    assert validate_url(url) == url


def test_branch_looking_like_an_option_refused(installer: ExtensionInstaller, upstream: Path) -> None:
    with pytest.raises(UserError, match="branch"):
        installer.install_from_git(upstream.as_uri(), branch="--upload-pack=x")


def test_git_not_installed(installer: ExtensionInstaller, upstream: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(upstream / "empty-bin"))
    with pytest.raises(GitNotFound, match="git is not installed"):
        installer.install_from_git(upstream.as_uri())
    assert_nothing_left(installer)


# -- folders ---------------------------------------------------------------------------------------------


def test_install_from_folder_keeps_git(installer: ExtensionInstaller, upstream: Path) -> None:
    manifest = installer.install_from_folder(upstream)
    target = installer.extensions_dir / "hello"
    assert manifest.id == "hello"
    assert (target / "main.py").is_file() and (target / ".git").is_dir()
    assert (upstream / "main.py").is_file(), "the source folder is copied, not moved"
    assert listing(installer.tmp_dir) == []


def test_folder_with_inner_symlink_is_fine(installer: ExtensionInstaller, tmp_path: Path) -> None:
    source = write_extension(tmp_path / "src")
    (source / "alias.py").symlink_to("main.py")
    installer.install_from_folder(source)
    assert (installer.extensions_dir / "hello" / "alias.py").read_text() == MAIN_PY


def test_folder_with_escaping_symlink_refused(installer: ExtensionInstaller, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("secret")
    source = write_extension(tmp_path / "src")
    (source / "leak.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(UserError, match="outside the extension folder"):
        installer.install_from_folder(source)
    assert_nothing_left(installer)


def test_folder_with_fifo_refused(installer: ExtensionInstaller, tmp_path: Path) -> None:
    source = write_extension(tmp_path / "src")
    os.mkfifo(source / "pipe")
    with pytest.raises(UserError, match="device, pipe or socket"):
        installer.install_from_folder(source)
    assert_nothing_left(installer)


def test_folder_containing_the_extensions_dir_refused(installer: ExtensionInstaller, tmp_path: Path) -> None:
    write_extension(tmp_path)
    with pytest.raises(UserError, match="contains the app's"):
        installer.install_from_folder(tmp_path)


# -- archives --------------------------------------------------------------------------------------------


def make_zip(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def add_tar_member(tf: tarfile.TarFile, info: tarfile.TarInfo, data: bytes = b"") -> None:
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data) if data else None)


def make_tar(path: Path, files: dict[str, str], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:  # type: ignore[call-overload]
        for name, text in files.items():
            add_tar_member(tf, tarfile.TarInfo(name), text.encode())
    return path


def extension_files(prefix: str = "") -> dict[str, str]:
    return {f"{prefix}extension.toml": manifest_text(), f"{prefix}main.py": MAIN_PY}


@pytest.mark.parametrize("prefix", ["", "hello-main/"], ids=["root", "top-folder"])
@pytest.mark.parametrize("kind", ["zip", "tar.gz", "tar.bz2", "tar.xz", "tar"])
def test_install_from_archive(installer: ExtensionInstaller, tmp_path: Path, kind: str, prefix: str) -> None:
    archive = tmp_path / f"hello.{kind}"
    if kind == "zip":
        make_zip(archive, extension_files(prefix))
    else:
        make_tar(archive, extension_files(prefix), mode="w" if kind == "tar" else f"w:{kind.split('.')[1]}")
    manifest = installer.install_from_archive(archive)
    assert manifest.id == "hello"
    assert listing(installer.extensions_dir / "hello") == ["extension.toml", "main.py"]
    assert listing(installer.tmp_dir) == []


def test_archive_ignores_macos_metadata_folder(installer: ExtensionInstaller, tmp_path: Path) -> None:
    files = extension_files("hello/") | {"__MACOSX/hello/._main.py": "junk"}
    installer.install_from_archive(make_zip(tmp_path / "hello.zip", files))
    assert listing(installer.extensions_dir / "hello") == ["extension.toml", "main.py"]


def test_archive_without_manifest_refused(installer: ExtensionInstaller, tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "x.zip", {"a/extension.toml": manifest_text(), "b/main.py": MAIN_PY})
    with pytest.raises(ManifestError, match="single top-level folder"):
        installer.install_from_archive(archive)
    assert_nothing_left(installer)


def test_not_an_archive_refused(installer: ExtensionInstaller, tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00not an archive" * 100)
    with pytest.raises(UserError, match="not a .zip or .tar"):
        installer.install_from_archive(junk)
    assert_nothing_left(installer)


def test_zip_slip_refused(installer: ExtensionInstaller, tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "evil.zip", extension_files() | {"../evil.txt": "pwned", "..\\evil2.txt": "x"})
    with pytest.raises(UserError, match="outside the archive"):
        installer.install_from_archive(archive)
    assert not list(tmp_path.rglob("evil*.txt"))
    assert_nothing_left(installer)


def test_tar_absolute_member_refused(installer: ExtensionInstaller, tmp_path: Path) -> None:
    absolute = tmp_path / "abs-evil.txt"
    archive = make_tar(tmp_path / "evil.tar.gz", extension_files() | {str(absolute): "pwned"})
    with pytest.raises(UserError, match="absolute path"):
        installer.install_from_archive(archive)
    assert not absolute.exists()
    assert_nothing_left(installer)


def test_tar_escaping_symlink_refused(installer: ExtensionInstaller, tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tf:
        for name, text in extension_files().items():
            add_tar_member(tf, tarfile.TarInfo(name), text.encode())
        link = tarfile.TarInfo("out")
        link.type, link.linkname = tarfile.SYMTYPE, "../../.."
        add_tar_member(tf, link)
        add_tar_member(tf, tarfile.TarInfo("out/evil.txt"), b"pwned")
    with pytest.raises(UserError, match="symbolic link"):
        installer.install_from_archive(archive)
    assert not list(tmp_path.rglob("evil.txt"))
    assert_nothing_left(installer)


def test_tar_symlink_chain_refused(installer: ExtensionInstaller, tmp_path: Path) -> None:
    # "l" -> "." is harmless alone, but "m" -> "l/.." then really means the folder's parent.
    archive = tmp_path / "chain.tar"
    with tarfile.open(archive, "w") as tf:
        for name, text in extension_files().items():
            add_tar_member(tf, tarfile.TarInfo(name), text.encode())
        for name, target in (("l", "."), ("m", "l/..")):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, target
            add_tar_member(tf, link)
        add_tar_member(tf, tarfile.TarInfo("m/evil.txt"), b"pwned")
    with pytest.raises(UserError, match="symbolic link"):
        installer.install_from_archive(archive)
    assert not list(tmp_path.rglob("evil.txt"))
    assert_nothing_left(installer)


@pytest.mark.parametrize("link_name", ["../../../etc/passwd", "/etc/passwd", "missing.txt"])
def test_tar_hardlink_outside_refused(installer: ExtensionInstaller, tmp_path: Path, link_name: str) -> None:
    archive = tmp_path / "hard.tar"
    with tarfile.open(archive, "w") as tf:
        for name, text in extension_files().items():
            add_tar_member(tf, tarfile.TarInfo(name), text.encode())
        link = tarfile.TarInfo("passwd")
        link.type, link.linkname = tarfile.LNKTYPE, link_name
        add_tar_member(tf, link)
    with pytest.raises(UserError, match="hard link|outside the archive|absolute path"):
        installer.install_from_archive(archive)
    assert_nothing_left(installer)


def test_tar_hardlink_inside_is_copied(installer: ExtensionInstaller, tmp_path: Path) -> None:
    archive = tmp_path / "hard.tar"
    with tarfile.open(archive, "w") as tf:
        for name, text in extension_files().items():
            add_tar_member(tf, tarfile.TarInfo(name), text.encode())
        link = tarfile.TarInfo("copy.py")
        link.type, link.linkname = tarfile.LNKTYPE, "main.py"
        add_tar_member(tf, link)
    installer.install_from_archive(archive)
    copy = installer.extensions_dir / "hello" / "copy.py"
    assert copy.read_text() == MAIN_PY and not copy.is_symlink()


def test_tar_device_refused(installer: ExtensionInstaller, tmp_path: Path) -> None:
    archive = tmp_path / "dev.tar"
    with tarfile.open(archive, "w") as tf:
        for name, text in extension_files().items():
            add_tar_member(tf, tarfile.TarInfo(name), text.encode())
        device = tarfile.TarInfo("null")
        device.type, device.devmajor, device.devminor = tarfile.CHRTYPE, 1, 3
        add_tar_member(tf, device)
    with pytest.raises(UserError, match="device"):
        installer.install_from_archive(archive)
    assert_nothing_left(installer)


def test_archive_size_limit(tmp_path: Path, pip: PipRecorder) -> None:
    small = ExtensionInstaller(tmp_path / "ext", tmp_path / "tmp", pip_runner=pip, max_archive_bytes=1000)
    files = extension_files() | {"big.bin": "x" * 2000}
    for archive in (make_zip(tmp_path / "big.zip", files), make_tar(tmp_path / "big.tar.gz", files)):
        with pytest.raises(UserError, match="more than"):
            small.install_from_archive(archive)
        assert_nothing_left(small)


def test_archive_member_limit(tmp_path: Path, pip: PipRecorder) -> None:
    small = ExtensionInstaller(tmp_path / "ext", tmp_path / "tmp", pip_runner=pip, max_archive_members=3)
    files = extension_files() | {f"f{i}.txt": "x" for i in range(5)}
    for archive in (make_zip(tmp_path / "many.zip", files), make_tar(tmp_path / "many.tar.gz", files)):
        with pytest.raises(UserError, match="more than 3 entries"):
            small.install_from_archive(archive)
        assert_nothing_left(small)


def test_size_limit_enforced_while_writing(tmp_path: Path) -> None:
    # A header that under-declares must still be stopped by the byte count taken while writing.
    budget = archive_module._Budget(archive_module._Limits(max_bytes=10, max_members=10))
    (tmp_path / "root").mkdir()
    with pytest.raises(UserError, match="more than"):
        archive_module._write_file(tmp_path / "root", PurePosixPath("a.bin"), io.BytesIO(b"x" * 11), False, budget)


# -- common flow -----------------------------------------------------------------------------------------


def test_bad_manifest_refused_and_nothing_left(installer: ExtensionInstaller, tmp_path: Path) -> None:
    source = write_extension(tmp_path / "src", manifest_text().replace("api_version = 1", "api_version = 99"))
    git(source, "init", "-q", "-b", "main")
    commit_all(source, "bad")
    for attempt in (
        lambda: installer.install_from_git(source.as_uri()),
        lambda: installer.install_from_folder(source),
        lambda: installer.install_from_archive(make_zip(tmp_path / "bad.zip", {"extension.toml": "id = [nope"})),
    ):
        with pytest.raises(ManifestError, match="extension.toml"):
            attempt()
        assert_nothing_left(installer)


def test_folder_without_manifest_refused(installer: ExtensionInstaller, tmp_path: Path) -> None:
    source = tmp_path / "not-an-extension"
    source.mkdir()
    (source / "main.py").write_text(MAIN_PY)
    with pytest.raises(ManifestError, match=f"{source} has no extension.toml"):
        installer.install_from_folder(source)
    assert_nothing_left(installer)


def test_already_installed_refused(installer: ExtensionInstaller, upstream: Path) -> None:
    installer.install_from_git(str(upstream))
    marker = installer.extensions_dir / "hello" / "user-file.txt"
    marker.write_text("keep me")
    with pytest.raises(UserError, match="already installed; use update"):
        installer.install_from_folder(upstream)
    with pytest.raises(UserError, match="already installed"):
        installer.install_from_git(str(upstream), folder_name="hello")
    assert marker.read_text() == "keep me"
    assert listing(installer.extensions_dir) == ["hello"]
    assert listing(installer.tmp_dir) == []


def test_disabled_copy_counts_as_installed(installer: ExtensionInstaller, upstream: Path) -> None:
    installer.install_from_folder(upstream)
    (installer.extensions_dir / "hello").rename(installer.extensions_dir / "hello.disabled")
    with pytest.raises(UserError, match="hello.disabled is already installed"):
        installer.install_from_folder(upstream)


def test_pip_requirements_go_to_the_runner(installer: ExtensionInstaller, pip: PipRecorder, tmp_path: Path) -> None:
    source = write_extension(tmp_path / "src", manifest_text(extra='pip = ["numpy>=1.26", "rich"]\n'))
    installer.install_from_folder(source)
    assert pip.calls == [["numpy>=1.26", "rich"]]


def test_no_pip_call_without_requirements(installer: ExtensionInstaller, pip: PipRecorder, upstream: Path) -> None:
    installer.install_from_folder(upstream)
    assert pip.calls == []


def test_failing_pip_leaves_nothing_installed(tmp_path: Path) -> None:
    failing = PipRecorder(fail=True)
    installer = ExtensionInstaller(tmp_path / "ext", tmp_path / "tmp", pip_runner=failing)
    source = write_extension(tmp_path / "src", manifest_text(extra='pip = ["numpy>=1.26"]\n'))
    with pytest.raises(UserError, match="pip"):
        installer.install_from_folder(source)
    assert failing.calls == [["numpy>=1.26"]]
    assert_nothing_left(installer)


def fake_python(tmp_path: Path, body: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point run_pip's interpreter at a shell script, so its error handling is tested without pip."""
    script = tmp_path / "fake-python"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    monkeypatch.setattr(install_module.sys, "executable", str(script))


def test_run_pip_reports_pips_last_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_python(tmp_path, 'echo "line $*"; echo "ERROR: No matching distribution for nope" >&2; exit 1', monkeypatch)
    with pytest.raises(UserError, match="No matching distribution") as info:
        install_module.run_pip(["nope"])
    assert "pip could not install nope" in info.value.message
    assert "-m pip install" in info.value.message and "-- nope" in info.value.message


def test_run_pip_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_python(tmp_path, "sleep 5", monkeypatch)
    with pytest.raises(UserError, match="did not finish"):
        install_module.run_pip(["slow"], timeout_s=0.3)


def test_move_falls_back_to_copy_across_devices(
    installer: ExtensionInstaller, upstream: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_rename = os.rename
    calls: list[str] = []

    def rename(src: os.PathLike[str] | str, dst: os.PathLike[str] | str) -> None:
        calls.append(str(src))
        if installer.tmp_dir in Path(src).parents:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_rename(src, dst)

    monkeypatch.setattr(install_module.os, "rename", rename)
    installer.install_from_folder(upstream)
    assert listing(installer.extensions_dir) == ["hello"], "no hidden temporary folder is left behind"
    assert (installer.extensions_dir / "hello" / "main.py").is_file()
    assert len(calls) == 2


# -- updates ---------------------------------------------------------------------------------------------


def test_update_fast_forwards(installer: ExtensionInstaller, upstream: Path) -> None:
    installer.install_from_git(upstream.as_uri())
    target = installer.extensions_dir / "hello"
    status = installer.check_for_updates(target)
    assert status.is_git and status.behind == 0 and status.message == "latest" and status.branch == "main"

    (upstream / "new_feature.py").write_text("X = 1\n")
    commit_all(upstream, "feature")
    status = installer.check_for_updates(target)
    assert status.behind == 1 and status.message == "1 new commit"
    assert status.remote == git(upstream, "rev-parse", "--short", "HEAD")
    assert not (target / "new_feature.py").exists(), "checking does not change the files"

    result = installer.update(target)
    assert (target / "new_feature.py").read_text() == "X = 1\n"
    assert result.behind == 0 and result.current == status.remote
    assert result.message.startswith("updated ")
    assert installer.check_for_updates(target).message == "latest"


def test_update_counts_several_commits(installer: ExtensionInstaller, upstream: Path) -> None:
    installer.install_from_git(str(upstream))
    for i in range(3):
        (upstream / f"f{i}.py").write_text("")
        commit_all(upstream, f"c{i}")
    assert installer.check_for_updates(installer.extensions_dir / "hello").message == "3 new commits"


def test_update_with_invalid_manifest_rolls_back(installer: ExtensionInstaller, upstream: Path) -> None:
    installer.install_from_git(upstream.as_uri())
    target = installer.extensions_dir / "hello"
    before = git(target, "rev-parse", "HEAD")
    (upstream / "extension.toml").write_text(manifest_text().replace("api_version = 1", "api_version = 42"))
    (upstream / "broken.py").write_text("")
    commit_all(upstream, "break it")

    with pytest.raises(ManifestError, match="rolled back"):
        installer.update(target)
    assert git(target, "rev-parse", "HEAD") == before
    assert not (target / "broken.py").exists()
    assert "api_version = 1\n" in (target / "extension.toml").read_text()


def test_update_installs_changed_pip_requirements(
    installer: ExtensionInstaller, pip: PipRecorder, upstream: Path
) -> None:
    installer.install_from_git(upstream.as_uri())
    (upstream / "extension.toml").write_text(manifest_text("1.1.0", 'pip = ["rich"]\n'))
    commit_all(upstream, "needs rich")
    installer.update(installer.extensions_dir / "hello")
    assert pip.calls == [["rich"]]


def test_update_with_failing_pip_rolls_back(tmp_path: Path, upstream: Path) -> None:
    installer = ExtensionInstaller(tmp_path / "ext", tmp_path / "tmp", pip_runner=PipRecorder(fail=True))
    installer.install_from_git(upstream.as_uri())
    target = installer.extensions_dir / "hello"
    before = git(target, "rev-parse", "HEAD")
    (upstream / "extension.toml").write_text(manifest_text("1.1.0", 'pip = ["rich"]\n'))
    commit_all(upstream, "needs rich")
    with pytest.raises(UserError, match="rolled back"):
        installer.update(target)
    assert git(target, "rev-parse", "HEAD") == before


def test_update_refuses_local_changes(installer: ExtensionInstaller, upstream: Path) -> None:
    installer.install_from_git(upstream.as_uri())
    target = installer.extensions_dir / "hello"
    (target / "main.py").write_text("# my edit\n")
    (upstream / "new.py").write_text("")
    commit_all(upstream, "upstream change")
    with pytest.raises(UserError, match="local changes"):
        installer.update(target)
    assert (target / "main.py").read_text() == "# my edit\n"


def test_update_refuses_diverged_history(installer: ExtensionInstaller, upstream: Path) -> None:
    installer.install_from_git(upstream.as_uri())
    target = installer.extensions_dir / "hello"
    (target / "mine.py").write_text("")
    commit_all(target, "local commit")
    (upstream / "theirs.py").write_text("")
    commit_all(upstream, "upstream commit")
    with pytest.raises(UserError, match="cannot be fast-forwarded"):
        installer.update(target)
    assert (target / "mine.py").exists() and not (target / "theirs.py").exists()


def test_update_when_already_latest(installer: ExtensionInstaller, upstream: Path) -> None:
    installer.install_from_git(upstream.as_uri())
    assert installer.update(installer.extensions_dir / "hello").message == "latest"


def test_non_git_extension_inside_a_git_checkout(installer: ExtensionInstaller, tmp_path: Path) -> None:
    # The data dir sits inside a repository (like the app's own checkout); git must not act on that one.
    data = tmp_path / "data"
    data.mkdir()
    git(data, "init", "-q")
    installer.install_from_archive(make_zip(tmp_path / "hello.zip", extension_files()))
    target = installer.extensions_dir / "hello"
    status = installer.check_for_updates(target)
    assert not status.is_git and status.message == "not a git repository"
    with pytest.raises(UserError, match="not a git repository"):
        installer.update(target)


def test_tag_checkout_has_no_upstream(installer: ExtensionInstaller, upstream: Path) -> None:
    git(upstream, "tag", "v1")
    installer.install_from_git(upstream.as_uri(), branch="v1")
    status = installer.check_for_updates(installer.extensions_dir / "hello")
    assert status.is_git and status.behind == 0 and "detached" in status.message


@pytest.mark.parametrize("method", ["check_for_updates", "update", "uninstall"])
def test_folders_outside_extensions_dir_refused(installer: ExtensionInstaller, upstream: Path, method: str) -> None:
    installer.install_from_git(upstream.as_uri())
    for folder in (upstream, installer.extensions_dir / "hello" / ".." / ".." / "tmp", installer.extensions_dir):
        with pytest.raises(UserError, match="not a user extension folder"):
            getattr(installer, method)(folder)
    assert (upstream / "main.py").exists()


# -- uninstall -------------------------------------------------------------------------------------------


def test_uninstall_removes_the_folder(installer: ExtensionInstaller, upstream: Path) -> None:
    installer.install_from_git(upstream.as_uri())
    installer.uninstall(installer.extensions_dir / "hello")
    assert listing(installer.extensions_dir) == []


def test_uninstall_missing_folder(installer: ExtensionInstaller) -> None:
    installer.extensions_dir.mkdir(parents=True)
    with pytest.raises(UserError, match="no extension folder"):
        installer.uninstall(installer.extensions_dir / "nope")


def test_uninstall_symlinked_extension_keeps_the_source(installer: ExtensionInstaller, upstream: Path) -> None:
    installer.extensions_dir.mkdir(parents=True)
    link = installer.extensions_dir / "hello"
    link.symlink_to(upstream, target_is_directory=True)
    installer.uninstall(link)
    assert not link.exists() and not link.is_symlink()
    assert (upstream / "main.py").is_file()
