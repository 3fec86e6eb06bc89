"""Issue 9, item 1: the studio started with --listen, attacked from another machine on the same LAN.

The server runs in its own network namespace and every client in another (tests/security/netns.py), so requests
really arrive over a network interface from a foreign address. With no auth and no opt-in, a LAN client can
generate, but cannot install, update, enable, disable or remove extensions, nor make the server read or write
its own folders, through the REST API or through the UI's own event routes. Loopback follows the flags too.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from typing import Any

import pytest
from PIL import Image

from tests.fixtures import extensions as fx
from tests.security.netns import Lan, LanServer, launch_lan_server, private_lan, stop_all, unavailable

pytestmark = pytest.mark.e2e

OPT_IN = "--enable-insecure-extension-access"
FINISHED = {"key": "state", "in": ["done", "failed", "cancelled"], "wait_s": 60}


@pytest.fixture(scope="module")
def lan_ok() -> None:
    reason = unavailable()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def listening(lan_ok, tmp_path_factory: pytest.TempPathFactory):
    """--listen --api, one extension installed, one tiny checkpoint; no auth, no opt-in.

    A txt2img request from the LAN is sent as soon as the server is up and collected by the last test, so the
    minute of torch import and CPU sampling overlaps the other tests."""
    data = tmp_path_factory.mktemp("lan") / "data"
    fx.write_extension(data / "extensions", "hello", fx.HELLO)
    (data / "inputs").mkdir(parents=True)
    Image.new("RGB", (64, 64), "teal").save(data / "inputs" / "private.png")  # what a folder job would read
    with private_lan() as lan:
        server = launch_lan_server(lan, data, "--listen", "--api")
        try:
            # Built while the server starts (both take seconds); the server is told to look again below.
            from tests.fixtures.tiny_models import save_tiny_checkpoint

            save_tiny_checkpoint(data / "models" / "Stable-diffusion", "sd1", name="tiny")
            server.wait_until_up()
            [refresh] = lan.requests([{"method": "POST", "url": server.url + "/sdapi/v1/refresh-checkpoints"}])
            assert refresh["status"] == 200, refresh
            generation = lan.start_requests([{
                "method": "POST", "url": server.url + "/sdapi/v1/txt2img", "timeout": 150, "max_bytes": 1 << 20,
                "json": {"prompt": "a lighthouse", "steps": 1, "width": 64, "height": 64, "seed": 7}}], budget_s=180)
            yield lan, server, data, generation
        finally:
            server.stop()


@pytest.fixture(scope="module")
def loopback_and_opt_in(lan_ok, tmp_path_factory: pytest.TempPathFactory):
    """Two more servers, started together: one without --listen, one with --listen and the opt-in."""
    root = tmp_path_factory.mktemp("lan-flags")
    for name in ("plain", "opt-in"):
        fx.write_extension(root / name / "data" / "extensions", "hello", fx.HELLO)
    with private_lan() as plain_lan, private_lan() as opt_in_lan:
        plain = launch_lan_server(plain_lan, root / "plain" / "data")
        opt_in = launch_lan_server(opt_in_lan, root / "opt-in" / "data", "--listen", OPT_IN)
        try:
            plain.wait_until_up()
            opt_in.wait_until_up()
            yield (plain_lan, plain), (opt_in_lan, opt_in)
        finally:
            stop_all(plain, opt_in)


def refused(answer: dict[str, Any]) -> bool:
    return answer["status"] == 403 and OPT_IN in answer["body"]


def test_extension_management_is_refused_over_rest(listening) -> None:
    lan, server, data, _ = listening
    base = server.url
    specs = [
        {"method": "POST", "url": base + "/studio/v1/extensions/install",
         "json": {"url": "https://example.invalid/x.git"}},
        {"method": "POST", "url": base + "/studio/v1/extensions/hello/disable"},
        {"method": "POST", "url": base + "/studio/v1/extensions/hello/enable"},
        {"method": "GET", "url": base + "/studio/v1/extensions/hello/updates"},
        {"method": "POST", "url": base + "/studio/v1/extensions/hello/update"},
        {"method": "DELETE", "url": base + "/studio/v1/extensions/hello"},
        {"method": "POST", "url": base + "/sdapi/v1/options", "json": {"disabled_extensions": ["hello"]}},
    ]
    answers = lan.requests(specs)
    for spec, answer in zip(specs, answers, strict=True):
        assert refused(answer), (spec, answer)
    assert (data / "extensions" / "hello" / "main.py").is_file()
    assert sorted(p.name for p in (data / "extensions").iterdir()) == ["hello"]


def _zip(folder_name: str) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{folder_name}/extension.toml", 'id = "zipped"\nname = "Zipped"\nversion = "1.0.0"\n'
                         "api_version = 1\n")
        archive.writestr(f"{folder_name}/main.py", "def register(api):\n    pass\n")
    return base64.b64encode(buffer.getvalue()).decode()


def test_extension_management_is_refused_through_the_ui(listening) -> None:
    """The Extensions tab's buttons, triggered the way the page triggers them (Gradio's queue), from the LAN."""
    lan, server, data, _ = listening
    local = data / "inputs" / "local-ext"
    fx.write_extension(local.parent, "localext", "def register(api):\n    pass\n", folder=local.name)
    calls = [
        ("extensions_install", {"extensions_url": "https://example.invalid/x.git"}, {}),
        ("extensions_install_folder", {"extensions_local_folder": str(local)}, {}),
        ("extensions_install_archive", {}, {"extensions_archive": ["zipped.zip", _zip("zipped")]}),
        ("extensions_apply", {"extensions_enabled": []}, {}),
        ("extensions_check", {"extensions_target": "hello"}, {}),
        ("extensions_update", {"extensions_target": "hello"}, {}),
    ]
    specs = [{"kind": "gradio", "base": server.url, "elem_id": elem, "inputs": inputs, "uploads": uploads}
             for elem, inputs, uploads in calls]
    answers = lan.requests(specs)
    for (elem, _, _), answer in zip(calls, answers, strict=True):
        assert answer["status"] == 200 and answer.get("success"), (elem, answer)
        message = " ".join(str(x) for x in answer["output"] or [])
        assert OPT_IN in message, (elem, message)
    assert sorted(p.name for p in (data / "extensions").iterdir()) == ["hello"]
    config = data / "config.json"
    assert not config.exists() or not json.loads(config.read_text()).get("disabled_extensions")


def test_loopback_on_a_listening_server_follows_the_same_rule(listening) -> None:
    """--listen is about how the app was started, not who asks: the machine's own user is refused too."""
    lan, server, _, _ = listening
    [answer] = lan.requests([{"method": "POST", "url": "http://127.0.0.1:7860/studio/v1/extensions/hello/disable"}],
                            from_server=True)
    assert refused(answer), answer


def test_without_listen_the_lan_cannot_connect_and_loopback_may_manage(loopback_and_opt_in) -> None:
    (lan, server), _ = loopback_and_opt_in
    [from_lan] = lan.requests([{"url": lan.url() + "/studio/v1/health", "timeout": 3}])
    assert from_lan["status"] is None and "ConnectError" in from_lan["error"], from_lan
    local = lan.requests([{"url": "http://127.0.0.1:7860/studio/v1/health"},
                          {"method": "POST", "url": "http://127.0.0.1:7860/studio/v1/extensions/hello/disable"}],
                         from_server=True)
    assert local[0]["status"] == 200
    assert local[1]["status"] == 200, local[1]


def test_opt_in_lets_the_lan_manage_extensions(loopback_and_opt_in) -> None:
    _, (lan, server) = loopback_and_opt_in
    [answer] = lan.requests([{"method": "POST", "url": server.url + "/studio/v1/extensions/hello/disable"}])
    assert answer["status"] == 200, answer


def _submit_and_wait(lan: Lan, server: LanServer, job_type: str, request: dict[str, Any]) -> dict[str, Any]:
    submitted = lan.requests([{"method": "POST", "url": server.url + "/studio/v1/jobs",
                               "json": {"type": job_type, "request": request}}])[0]
    assert submitted["status"] == 202, submitted
    job_id = json.loads(submitted["body"])["id"]
    [finished] = lan.requests([{"url": f"{server.url}/studio/v1/jobs/{job_id}", "until": FINISHED}], budget_s=90)
    return json.loads(finished["body"])


def test_server_folders_are_refused(listening) -> None:
    """Batch from a folder (img2img and extras) sent straight to the job API and from the UI's Batch sub-tabs,
    and files named by path through the UI's file route."""
    lan, server, data, _ = listening
    folder = data / "inputs"
    out = data / "written-by-a-stranger"
    img2img = _submit_and_wait(lan, server, "img2img-batch", {"input_dir": str(folder), "output_dir": str(out),
                                                               "steps": 1, "width": 64, "height": 64})
    extras = _submit_and_wait(lan, server, "extras", {"input_dir": str(folder), "output_dir": str(out),
                                                       "upscaling_resize": 2, "upscaler_1": "Lanczos"})
    for job in (img2img, extras):
        assert job["state"] == "failed" and OPT_IN in job["error"], job
    # The same from the img2img and Extras tabs: pick the folder sub-tab, then press Generate.
    ui = [("img2img_batch_tab", "img2img_generate", {"img2img_batch_input_dir": str(folder),
                                                     "img2img_batch_output_dir": str(out)}),
          ("extras_batch_directory_tab", "extras_generate", {"extras_batch_input_dir": str(folder),
                                                             "extras_batch_output_dir": str(out)})]
    answers = lan.requests([{"kind": "gradio", "base": server.url, "events": [
        {"elem_id": tab, "event": "select"}, {"elem_id": button, "inputs": inputs}]} for tab, button, inputs in ui])
    for (_, button, _), answer in zip(ui, answers, strict=True):
        assert answer["status"] == 200, (button, answer)
        assert OPT_IN in str(answer["output"][0]), (button, answer)
    assert not out.exists()

    files = ["/etc/passwd", str(data / "config.json"), str(data / "extensions" / "hello" / "main.py"),
             str(data / "outputs" / ".." / "extensions" / "hello" / "main.py")]
    answers = lan.requests([{"url": f"{server.url}/gradio_api/file={path}"} for path in files])
    for path, answer in zip(files, answers, strict=True):
        assert answer["status"] in (403, 404), (path, answer)
        assert "register" not in answer["body"] and "root:" not in answer["body"]


def test_generation_works_from_the_lan(listening) -> None:
    """Last in the file: the request went out when the server came up (see `listening`)."""
    _, _, _, generation = listening
    [answer] = generation.result()
    assert answer["status"] == 200, answer
    assert '"images"' in answer["body"] and "Seed: 7" in answer["body"]
