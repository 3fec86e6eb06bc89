"""The extension system through the same start-up path the app uses: discovery, every contribution, each hook,
isolation of broken extensions, enable/disable persistence, and install from a local git repository."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from modules.errors import AccessDenied, UserError
from modules.extensions.hooks import GenerateEvent, ImageSaveEvent
from modules.services import build_services
from tests.fixtures import extensions as fx


def start(data: Path, *flags: str):
    return build_services(["--data-dir", str(data), *flags], {})


def states(services) -> dict[str, str]:
    """States of the user extensions a test installed (built-ins such as SadTalker are left out)."""
    return {r["id"]: r["state"] for r in services.extension_manager.overview()["extensions"] if not r["builtin"]}


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_discovery_and_every_contribution(data: Path) -> None:
    fx.write_extension(data / "extensions", "hello", fx.HELLO)
    services = start(data, "--hello-loud")
    assert states(services) == {"hello": "loaded"}
    record = services.extensions.get("hello")
    assert record.load_ms > 0
    assert [t.title for r, t in services.extensions.tabs() if r.id == "hello"] == ["Hello"]
    assert services.settings.get("hello_greeting") == "hi"
    assert [r.path for e, r in services.extensions.routes() if e.id == "hello"] == ["/ext/hello/ping"]
    assert services.args.hello_loud is True
    assert "HelloModels" in [k.name for k in services.models.kinds()]
    assert (data / "models" / "HelloModels").parent.is_dir()


def test_unknown_flag_still_refused_when_extensions_add_flags(data: Path) -> None:
    from modules.cli import CliError

    fx.write_extension(data / "extensions", "hello", fx.HELLO)
    with pytest.raises(CliError, match="--hello-loud"):  # listed among the valid flags
        start(data, "--hello-lod")


def test_each_hook_fires_with_its_payload(data: Path) -> None:
    folder = fx.write_extension(data / "extensions", "hello", fx.HELLO)
    services = start(data)
    hooks = services.hooks
    hooks.fire("app_started", services.extensions.get("hello").api.AppStarted(url="http://x"))
    hooks.fire("before_generate", GenerateEvent("txt2img", request={"prompt": "a"}))
    hooks.fire("after_generate", GenerateEvent("txt2img", request={"prompt": "a"}, result=[]))
    event = ImageSaveEvent(Image.new("RGB", (8, 8)), data / "x.png", "Steps: 1", "txt2img")
    hooks.fire("before_image_saved", event)
    hooks.fire("image_saved", event)
    calls = [json.loads(line) for line in (folder / "calls.jsonl").read_text().splitlines()]
    assert [c["event"] for c in calls] == ["app_started", "before_generate", "after_generate",
                                           "before_image_saved", "image_saved"]
    assert calls[0]["loud"] is False  # flags are readable from hooks
    assert event.infotext == "Steps: 1, Hello: yes"  # before_image_saved may change what is written


@pytest.mark.parametrize("source, expected", [
    (fx.RAISES_ON_IMPORT, "ImportError: this extension is broken on purpose"),
    (fx.RAISES_IN_REGISTER, "RuntimeError: register failed on purpose"),
    (fx.NEEDS_MISSING_PACKAGE, "needs the Python package 'package_that_is_not_installed_anywhere'"),
])
def test_broken_extension_is_isolated_and_explained(data: Path, source: str, expected: str) -> None:
    fx.write_extension(data / "extensions", "broken", source)
    fx.write_extension(data / "extensions", "hello", fx.HELLO)
    services = start(data)
    rows = {r["id"]: r for r in services.extension_manager.overview()["extensions"]}
    assert rows["hello"]["state"] == "loaded"  # the good one is unaffected
    assert rows["broken"]["state"] == "failed"
    assert expected in rows["broken"]["error"]
    assert "Traceback" in rows["broken"]["traceback"]
    assert any("broken" in n.lower() for n in services.notices)  # shown on the first screen too
    assert not [m for m in __import__("sys").modules if m.startswith("sdstudio_ext_broken")]


def test_hook_that_raises_fails_its_extension_only(data: Path) -> None:
    fx.write_extension(data / "extensions", "bad-hook", fx.RAISES_IN_HOOK)
    folder = fx.write_extension(data / "extensions", "hello", fx.HELLO)
    services = start(data)
    event = ImageSaveEvent(Image.new("RGB", (8, 8)), data / "x.png", "Steps: 1", "txt2img")
    services.hooks.fire("before_image_saved", event)
    assert event.infotext == "Steps: 1, Hello: yes"
    assert states(services) == {"bad-hook": "failed", "hello": "loaded"}
    row = next(r for r in services.extension_manager.overview()["extensions"] if r["id"] == "bad-hook")
    assert "ValueError: hook failed on purpose" in row["error"]
    assert (folder / "calls.jsonl").exists()


def test_hook_that_hangs_times_out(data: Path) -> None:
    data.mkdir(parents=True)
    (data / "config.json").write_text(json.dumps({"extension_hook_timeout": 1}))
    fx.write_extension(data / "extensions", "hangs", fx.HANGS_IN_HOOK)
    fx.write_extension(data / "extensions", "hello", fx.HELLO)
    services = start(data)
    started = time.monotonic()
    services.hooks.fire("before_generate", GenerateEvent("txt2img", request={}))
    services.hooks.fire("before_generate", GenerateEvent("txt2img", request={}))  # skipped the second time
    assert time.monotonic() - started < 3
    assert states(services)["hangs"] == "failed"
    assert states(services)["hello"] == "loaded"


def test_missing_requirement_and_bad_manifest(data: Path) -> None:
    fx.write_extension(data / "extensions", "needy", "def register(api): pass\n", extra_manifest='requires = ["nope"]\n')
    bad = data / "extensions" / "bad-manifest"
    bad.mkdir(parents=True)
    (bad / "extension.toml").write_text('id = "bad-manifest"\napi_version = 99\n')
    services = start(data)
    rows = {r["id"]: r for r in services.extension_manager.overview()["extensions"]}
    assert "requires nope" in rows["needy"]["error"]
    assert "api_version 99 is not supported" in rows["bad-manifest"]["error"]


def test_disable_all_extensions_flag(data: Path) -> None:
    fx.write_extension(data / "extensions", "hello", fx.HELLO)
    services = start(data, "--disable-all-extensions")
    assert states(services) == {"hello": "disabled"}
    assert services.extensions.tabs() == []


def test_enable_disable_is_persisted_and_applied_on_restart(data: Path) -> None:
    fx.write_extension(data / "extensions", "hello", fx.HELLO)
    services = start(data)
    message = services.extension_manager.set_enabled("hello", False)
    assert "Restart" in message
    row = next(r for r in services.extension_manager.overview()["extensions"] if r["id"] == "hello")
    assert row["state"] == "loaded" and row["restart_needed"] and not row["enabled_next_start"]
    assert states(start(data)) == {"hello": "disabled"}
    start(data).extension_manager.set_enabled("hello", True)
    assert states(start(data)) == {"hello": "loaded"}


def test_listen_refuses_every_management_action(data: Path) -> None:
    fx.write_extension(data / "extensions", "hello", fx.HELLO)
    manager = start(data, "--listen").extension_manager
    assert manager.overview()["management_allowed"] is False
    actions = [
        lambda: manager.set_enabled("hello", False),
        lambda: manager.set_enabled_ids(set()),
        lambda: manager.install_from_url("https://example.invalid/x.git"),
        lambda: manager.install_from_folder(data),
        lambda: manager.install_from_archive(data / "x.zip"),
        lambda: manager.check_for_updates("hello"),
        lambda: manager.update("hello"),
        lambda: manager.uninstall("hello"),
    ]
    for action in actions:
        with pytest.raises(AccessDenied, match="--enable-insecure-extension-access"):
            action()
    assert not start(data, "--listen", "--enable-insecure-extension-access").access.shared_on_network is False


@pytest.mark.parametrize("flag", [["--share"], ["--server-name", "0.0.0.0"]])
def test_share_and_server_name_count_as_network(data: Path, flag: list[str]) -> None:
    assert start(data, *flag).access.extension_management_allowed is False


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_install_from_local_git_repo_then_it_loads_after_restart(data: Path, tmp_path: Path) -> None:
    repo = fx.write_extension(tmp_path / "src", "hello", fx.HELLO)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    services = start(data)
    message = services.extension_manager.install_from_url(str(repo))
    assert "Installed Hello 1.0.0" in message and "Restart" in message
    assert (data / "extensions" / "hello" / "extension.toml").is_file()
    assert states(start(data)) == {"hello": "loaded"}
    with pytest.raises(UserError, match="already installed"):
        start(data).extension_manager.install_from_url(str(repo))


def test_builtin_sadtalker_loads_and_owns_its_model_folder(data: Path) -> None:
    services = start(data)
    record = services.extensions.get("sadtalker")
    assert record is not None and record.builtin and record.state == "loaded"
    kind = next(k for k in services.models.kinds() if k.name == "SadTalker")
    assert kind.owner == "sadtalker" and kind.folders == (data / "models" / "SadTalker",)
    with pytest.raises(UserError, match="built in"):
        services.extension_manager.uninstall("sadtalker")
