"""Path traversal on every route that serves or takes a path: Gradio's file, upload and static routes; the REST
routes with ids in their paths; model names; settings that become paths; extension install targets; archive
members (zip-slip); server folders. Each probe is tried with `..`, absolute paths, symlinks and URL-encoded forms.

What must hold: only outputs/ and the app's own static files (and a user's own uploads) are served; nothing
outside the data dir is read or written; every refusal is a 4xx (or the tab's ⚠️ message) that says why.

The file-route probes go over a raw socket to the real server (`launch.py` in a subprocess), so that no client
library tidies `..` or `%2e%2e` away before the server sees them.
"""

from __future__ import annotations

import io
import json
import socket
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from modules.app import create_app
from modules.extensions.manager import ExtensionManager
from modules.paths import REPO_ROOT
from modules.services import Services, build_services
from modules.ui.extensions_tab import _run as run_extension_action
from tests.e2e.server import RunningServer, start_server
from tests.fixtures.talking_head_inputs import StubLandmarker, png_bytes, portrait, voice, wav_bytes
from tests.fixtures.tiny_models import save_tiny_checkpoint
from tests.fixtures.tiny_sadtalker import write_tiny_sadtalker
from tests.security.corpus import photo, png

SECRET = "TOP-SECRET-7c1e"  # in every file a probe must not be able to read
SMALL = {"prompt": "a fox", "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler"}


def refused(status: int) -> bool:
    return status in (400, 401, 403, 404, 405, 422)


# -- the real server: Gradio's routes ----------------------------------------------------------------------------


@dataclass
class Layout:
    root: Path  # the test's folder: the data dir and the "outside" live in it
    data: Path
    outside: Path
    secret: Path
    server: RunningServer


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Layout]:
    root = tmp_path_factory.mktemp("traversal")
    data, outside = root / "data", root / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text(SECRET)
    save_tiny_checkpoint(data / "models" / "Stable-diffusion", "sd1", name="good", seed=0)
    save_tiny_checkpoint(outside, "sd1", name="elsewhere", seed=1)  # a loadable model outside the data dir
    (outside / "evil.pt").write_text(SECRET)
    outputs = data / "outputs"
    (outputs / "txt2img-images").mkdir(parents=True)
    (outputs / "txt2img-images" / "ok.png").write_bytes(png(photo(8, 8)))
    (data / "config.json").write_text(json.dumps({"sd_model_checkpoint": "good", "x-secret": SECRET}))
    (data / "tmp").mkdir()
    (data / "tmp" / "other.txt").write_text(SECRET)
    # Links a user (or an extension) could have left in outputs/: out of the data dir, and to its config.
    (outputs / "link-to-secret.txt").symlink_to(secret)
    (outputs / "dir-link").symlink_to(outside, target_is_directory=True)
    (outputs / "link-to-config.json").symlink_to(data / "config.json")
    server = start_server(data, "--api", timeout=120)
    try:
        yield Layout(root, data, outside, secret, server)
    finally:
        server.stop()


def raw_get(base_url: str, target: str, method: str = "GET") -> tuple[int, bytes]:
    """One request with `target` sent exactly as written: no client normalises `..` or decodes `%2e`."""
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    with socket.create_connection((host, port), timeout=30) as conn:
        conn.sendall(f"{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def file_route_probes(layout: Layout) -> list[str]:
    outputs, data = str(layout.data / "outputs"), str(layout.data)
    secret, outside = str(layout.secret), str(layout.outside)
    config = f"{data}/config.json"
    checkpoint = f"{data}/models/Stable-diffusion/good.safetensors"
    targets = [
        f"{outputs}/../config.json", f"{outputs}/./../config.json", f"{outputs}/txt2img-images/../../config.json",
        f"{outputs}/txt2img-images/ok.png/../../../config.json", f"{outputs}/../../outside/secret.txt",
        f"{outputs}/%2e%2e/config.json", f"{outputs}/%2E%2E/config.json", f"{outputs}/%2e%2e%2fconfig.json",
        f"{outputs}%2f..%2fconfig.json", f"{outputs}/..%5cconfig.json", f"{outputs}/%252e%252e/config.json",
        f"{outputs}/..%252fconfig.json", f"{outputs}/%c0%ae%c0%ae/config.json",
        config, secret, checkpoint, f"{data}/tmp/other.txt", f"{outside}/evil.pt", "/etc/passwd",
        f"{REPO_ROOT}/modules/app.py", "modules/app.py", "launch.py", "../../../../../../etc/passwd",
        "%2fetc%2fpasswd", "//etc/passwd", "~/.bashrc", f"file://{secret}", f"{secret}%00.png",
        f"{outputs}/txt2img-images/ok.png%00/../../../config.json",
        f"{outputs}/link-to-secret.txt", f"{outputs}/dir-link/secret.txt", f"{outputs}/link-to-config.json",
        f"{outputs}/dir-link/../../data/config.json", outputs, f"{outputs}/", data,
    ]
    return [f"/gradio_api/file={quote(t, safe='/%:~')}" if "%" not in t else f"/gradio_api/file={t}"
            for t in targets]


def test_the_file_route_serves_outputs_and_nothing_else(layout: Layout) -> None:
    url = layout.server.url
    ok_status, ok_body = raw_get(url, f"/gradio_api/file={layout.data}/outputs/txt2img-images/ok.png")
    assert ok_status == 200 and ok_body.startswith(b"\x89PNG"), "the control file in outputs/ is not served"
    probes = file_route_probes(layout)
    # The older route names (Gradio 3/4) must not be a way around the check either.
    probes += [p.replace("/gradio_api/file=", prefix)
               for p in probes[:12] for prefix in ("/file=", "/gradio_api/file/")]
    leaks = []
    for target in probes:
        status, body = raw_get(url, target)
        if not refused(status) or SECRET.encode() in body or b"root:x:0:0" in body or b"def create_app" in body:
            leaks.append(f"{status} {target}: {body[:80]!r}")
    assert not leaks, f"{len(leaks)} of {len(probes)} probes got through:\n" + "\n".join(leaks)
    assert len(probes) >= 60


def test_static_routes_stay_in_their_folders(layout: Layout) -> None:
    escapes = ["../../../../../../etc/passwd", "%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
               "..%2f..%2f..%2f..%2fetc%2fpasswd", "..%5c..%5c..%5cetc%5cpasswd",
               "..%2f" * 8 + quote(str(layout.secret)[1:]),
               quote(str(layout.secret), safe=""), "%252e%252e%252f%252e%252e%252fetc%252fpasswd"]
    probes = [f"/{route}/{escape}" for route in ("static", "assets", "svelte", "gradio_api/static")
              for escape in escapes]
    probes += ["/favicon.ico/../../config.json", "/theme.css/../../../etc/passwd", "/manifest.json%2f..%2f..%2fetc"]
    leaks = []
    for target in probes:
        status, body = raw_get(layout.server.url, target)
        if not refused(status) or SECRET.encode() in body or b"root:x:0:0" in body:
            leaks.append(f"{status} {target}: {body[:80]!r}")
    assert not leaks, "\n".join(leaks)
    assert raw_get(layout.server.url, "/")[0] == 200  # the page itself is still served


def test_uploads_land_in_the_data_dir_whatever_their_name(layout: Layout) -> None:
    names = ["../../../../evil-upload.txt", "/tmp/evil-upload.txt", "..\\..\\evil-upload.txt",
             "%2e%2e%2f%2e%2e%2fevil-upload.txt", "evil-upload.txt\x00.png", ".."]
    uploads = layout.data / "tmp" / "gradio"
    with httpx.Client(base_url=layout.server.url, timeout=30) as client:
        for name in names:
            response = client.post("/gradio_api/upload", files={"files": (name, f"upload {name!r}".encode())})
            if refused(response.status_code):
                continue
            assert response.status_code == 200, response.text
            stored = Path(response.json()[0])
            assert stored.resolve().is_relative_to(uploads.resolve()), f"{name!r} stored at {stored}"
            # A user's own upload is served back to them, and only from where it was stored.
            assert client.get(f"/gradio_api/file={quote(str(stored))}").status_code == 200
    strays = [p for p in layout.root.rglob("*evil-upload*") if not p.resolve().is_relative_to(uploads.resolve())]
    assert not strays, strays
    assert not list(Path("/tmp").glob("evil-upload*"))


def test_rest_path_parameters_name_ids_not_paths(layout: Layout) -> None:
    ids = ["..%2F..%2Fconfig.json", "..%2f..%2f..%2fetc%2fpasswd", "%2e%2e", "..%5c..%5cconfig.json",
           "%252e%252e%252fconfig.json", quote(str(layout.secret), safe="")]
    probes = []
    for job_id in ids:
        probes += [("GET", f"/studio/v1/jobs/{job_id}"), ("DELETE", f"/studio/v1/jobs/{job_id}"),
                   ("GET", f"/ext/sadtalker/jobs/{job_id}/video"), ("GET", f"/studio/v1/downloads/jobs/{job_id}"),
                   ("POST", f"/studio/v1/downloads/{job_id}"), ("POST", f"/studio/v1/extensions/{job_id}/enable"),
                   ("POST", f"/studio/v1/extensions/{job_id}/disable"), ("DELETE", f"/studio/v1/extensions/{job_id}"),
                   ("GET", f"/studio/v1/extensions/{job_id}/updates"),
                   ("POST", f"/studio/v1/extensions/{job_id}/update")]
    probes += [("GET", "/ext/sadtalker/jobs/../../../../etc/passwd/video"),
               ("GET", "/studio/v1/jobs/../../config.json"),
               ("DELETE", "/studio/v1/extensions/../sadtalker")]
    leaks = []
    for method, target in probes:
        status, body = raw_get(layout.server.url, target, method)
        if not refused(status) or SECRET.encode() in body or b"root:x:0:0" in body:
            leaks.append(f"{status} {method} {target}: {body[:120]!r}")
    assert not leaks, "\n".join(leaks)
    # Nothing was disabled, removed or downloaded by any of them.
    assert json.loads((layout.data / "config.json").read_text()).get("disabled_extensions", []) == []
    assert (REPO_ROOT / "extensions" / "sadtalker" / "extension.toml").is_file()


def test_model_names_cannot_point_outside_the_model_folders(layout: Layout) -> None:
    outside = layout.outside
    elsewhere = str(outside / "elsewhere.safetensors")
    names = ["../../../outside/elsewhere.safetensors", elsewhere, elsewhere.replace("/", "\\"),
             "..%2F..%2F..%2Foutside%2Felsewhere.safetensors", f"{layout.data}/models/Stable-diffusion/../../../"
             "outside/elsewhere.safetensors", "/etc/passwd", "good/../../../outside/elsewhere", "~/elsewhere"]
    probes: list[tuple[str, dict[str, Any], str]] = []
    for name in names:
        probes += [
            ("/sdapi/v1/txt2img", {**SMALL, "override_settings": {"sd_model_checkpoint": name}}, "checkpoint"),
            ("/sdapi/v1/txt2img", {**SMALL, "override_settings": {"sd_vae": name}}, "VAE"),
            ("/sdapi/v1/txt2img", {**SMALL, "enable_hr": True, "hr_upscaler": name}, "upscaler"),
            ("/sdapi/v1/extra-single-image", {"image": _b64(png(photo())), "upscaler_1": name}, "upscaler"),
            ("/sdapi/v1/options", {"sd_model_checkpoint": name}, "checkpoint|model"),
            ("/sdapi/v1/txt2img", {**SMALL, "alwayson_scripts": {"ControlNet": {"args": [
                {"enabled": True, "module": "none", "model": name, "image": _b64(png(photo(64, 64)))}]}}},
             "ControlNet|model"),
        ]
    failures = []
    with httpx.Client(base_url=layout.server.url, timeout=120) as client:
        for path, body, word in probes:
            response = client.post(path, json=body)
            message = response.json().get("detail", "") if "json" in response.headers.get("content-type", "") else ""
            if not refused(response.status_code) or not any(w.lower() in message.lower() for w in word.split("|")):
                failures.append(f"{response.status_code} {path} {json.dumps(body)[:160]}: {message[:160]!r}")
        # A LoRA or embedding named by a path is not found (and never read): the image is made without it.
        for name in ("../../../outside/evil", str(outside / "evil"), "..%2F..%2Foutside%2Fevil"):
            response = client.post("/sdapi/v1/txt2img", json={**SMALL, "prompt": f"a fox <lora:{name}:1>"})
            if response.status_code == 200 or not refused(response.status_code):
                failures.append(f"{response.status_code} <lora:{name}:1> was not refused: {response.text[:200]}")
        options = client.get("/sdapi/v1/options").json()
    assert not failures, f"{len(failures)} of {len(probes) + 3}:\n" + "\n".join(failures)
    assert "good" in str(options["sd_model_checkpoint"])  # no probe changed the default checkpoint
    assert "Traceback" not in layout.server.log()


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


# -- in process: settings, extension installs, archives, server folders --------------------------------------------


@dataclass
class Studio:
    client: TestClient
    services: Services
    root: Path
    data: Path


def _studio(root: Path, *flags: str) -> Studio:
    data = root / "data"
    services = build_services(["--data-dir", str(data), "--api", *flags], {})
    return Studio(TestClient(create_app(services), raise_server_exceptions=False), services, root, data)


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    root = tmp_path_factory.mktemp("traversal-in-process")
    save_tiny_checkpoint(root / "data" / "models" / "Stable-diffusion", "sd1", name="good", seed=0)
    write_tiny_sadtalker(root / "data" / "models" / "SadTalker", sizes=(256,))
    (root / "outside").mkdir()
    made = _studio(root)
    # A detector that finds no face: a talking-head job decodes its media, then stops before any rendering.
    runner = next(t.run for t in made.services.jobs.types() if t.name == "sadtalker").__self__
    runner.use_landmarker(lambda _folder, _device: StubLandmarker(faces=[]))
    with made.client:
        yield made
    made.services.jobs.stop()
    made.services.download_jobs.stop()


def everything_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_settings_that_become_paths_keep_saves_inside_outputs(studio: Studio) -> None:
    """Folder and file-name patterns, and prompts and names that expand into them, never lead out of outputs/."""
    outputs = studio.data / "outputs"
    escape = "escaped-by-probe"
    settings_probes = [
        {"directories_filename_pattern": f"../../../{escape}", "save_to_dirs": True},
        {"directories_filename_pattern": f"/tmp/{escape}", "save_to_dirs": True},
        {"directories_filename_pattern": f"..\\..\\{escape}", "save_to_dirs": True},
        {"directories_filename_pattern": "[prompt_words]", "save_to_dirs": True},
        {"directories_filename_pattern": "[prompt]/[prompt]", "save_to_dirs": True},
        {"samples_filename_pattern": f"../../../{escape}-[seed]", "save_to_dirs": False},
        {"samples_filename_pattern": f"/tmp/{escape}-[seed]", "save_to_dirs": False},
        {"samples_filename_pattern": "[prompt]", "save_to_dirs": False, "save_images_add_number": False},
        {"samples_filename_pattern": "%2e%2e%2f%2e%2e%2f[seed]", "save_to_dirs": False},
    ]
    prompts = [f"../../../../{escape}", f"/tmp/{escape}", f"..\\..\\..\\{escape}", f"%2e%2e%2f{escape}"]
    before = everything_under(studio.root)
    problems = []
    try:
        for settings in settings_probes:
            response = studio.client.post("/sdapi/v1/options", json=settings)
            if refused(response.status_code):
                continue  # refusing the setting is as good as keeping it harmless
            assert response.status_code == 200, response.text
            # A pattern that expands the prompt meets every hostile prompt; the others need one image each.
            for prompt in prompts if "[prompt" in str(settings) else prompts[:1]:
                response = studio.client.post("/sdapi/v1/txt2img", json={**SMALL, "prompt": prompt,
                                                                         "save_images": True})
                if response.status_code != 200 and not refused(response.status_code):
                    problems.append(f"{settings} {prompt!r}: HTTP {response.status_code} {response.text[:200]}")
    finally:
        studio.client.post("/sdapi/v1/options", json={"directories_filename_pattern": "[date]",
                                                      "samples_filename_pattern": "", "save_to_dirs": True,
                                                      "save_images_add_number": True})
    # Extras names are file names only, whatever the client sends (job API with saving on).
    names = [f"../../../{escape}.png", f"/tmp/{escape}.png", f"..\\..\\{escape}.png", "..", "../..", "."]
    job = studio.client.post("/studio/v1/jobs", json={"type": "extras", "request": {
        "images": [_b64(png(photo()))] * len(names), "names": names, "upscaler_1": "Lanczos", "upscaling_resize": 1,
        "save_images": True}})
    assert job.status_code == 202, job.text
    studio.services.jobs.get(job.json()["id"]).wait(60)
    app_files = {studio.data / "config.json", studio.data / "cache"}  # the settings file and model caches
    strays = [p for p in everything_under(studio.root) - before
              if not p.is_relative_to(outputs) and not any(p == f or p.is_relative_to(f) for f in app_files)]
    assert not strays, f"written outside outputs/: {sorted(strays)[:10]}"
    assert not list(Path("/tmp").glob(f"{escape}*"))
    assert not problems, "\n".join(problems)
    saved = [p for p in outputs.rglob("*.png")]
    assert len(saved) >= 10, "the probes saved nothing, so they proved nothing"


def test_extension_install_targets_stay_in_extensions(studio: Studio) -> None:
    bad_names = ["../evil", "..", ".", "/tmp/evil", "a/../../evil", "..\\evil", ".hidden", "%2e%2e%2fevil",
                 "evil\x00", "evil/", "~/evil", "C:\\evil"]
    bad_urls = ["--upload-pack=touch /tmp/pwned", "ext::sh -c touch% /tmp/pwned", "-c core.sshCommand=x",
                "https://-oProxyCommand=x/repo", "fd::17"]
    extensions = studio.data / "extensions"
    before = everything_under(extensions)
    problems = []
    for name in bad_names:
        response = studio.client.post("/studio/v1/extensions/install",
                                      json={"url": "https://example.invalid/repo.git", "folder_name": name})
        if not refused(response.status_code) or "folder" not in response.text.lower():
            problems.append(f"folder_name {name!r}: {response.status_code} {response.text[:200]}")
    for url in bad_urls:
        response = studio.client.post("/studio/v1/extensions/install", json={"url": url})
        if not refused(response.status_code):
            problems.append(f"url {url!r}: {response.status_code} {response.text[:200]}")
    assert not problems, "\n".join(problems)
    assert everything_under(extensions) == before
    assert not list(Path("/tmp").glob("pwned*")) and not list(Path("/tmp").glob("evil*"))


# Archives as an attacker builds them: each tries to write `evil.py` (or link to a secret) outside the folder.
def _zip(entries: list[tuple[str, bytes, int | None]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def _tar(entries: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info in entries:
            payload = (data or {}).get(info.name)
            if payload is not None:
                info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return buffer.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


MANIFEST = b'id = "zipslip"\nname = "Zip slip"\nversion = "1.0"\napi_version = 1\n'
EVIL = b"open('/tmp/pwned', 'w')\n"
LINK = stat.S_IFLNK | 0o777


def archive_probes(outside: Path) -> dict[str, tuple[str, bytes]]:
    target = str(outside / "evil.py")
    return {
        "zip ../": ("e.zip", _zip([("extension.toml", MANIFEST, None), ("../evil.py", EVIL, None)])),
        "zip ../../ deep": ("e.zip", _zip([("extension.toml", MANIFEST, None),
                                           ("a/b/../../../../evil.py", EVIL, None)])),
        "zip absolute": ("e.zip", _zip([("extension.toml", MANIFEST, None), (target, EVIL, None)])),
        "zip backslashes": ("e.zip", _zip([("extension.toml", MANIFEST, None), ("..\\..\\evil.py", EVIL, None)])),
        "zip drive letter": ("e.zip", _zip([("extension.toml", MANIFEST, None), ("C:/evil.py", EVIL, None)])),
        "zip symlink out": ("e.zip", _zip([("extension.toml", MANIFEST, None),
                                           ("secret", str(outside).encode(), LINK)])),
        "zip symlink then write through it": ("e.zip", _zip([
            ("extension.toml", MANIFEST, None), ("out", b"../../..", LINK), ("out/evil.py", EVIL, None)])),
        "zip control characters": ("e.zip", _zip([("extension.toml", MANIFEST, None), ("evil\n.py", EVIL, None)])),
        "tar ../": ("e.tar.gz", _tar([_member("extension.toml"), _member("../evil.py")],
                                     {"extension.toml": MANIFEST, "../evil.py": EVIL})),
        "tar absolute": ("e.tar.gz", _tar([_member("extension.toml"), _member(target)],
                                          {"extension.toml": MANIFEST, target: EVIL})),
        "tar symlink out": ("e.tar.gz", _tar([_member("extension.toml"), _member("link", tarfile.SYMTYPE, "/etc")],
                                             {"extension.toml": MANIFEST})),
        "tar symlink then write through it": ("e.tar.gz", _tar(
            [_member("extension.toml"), _member("out", tarfile.SYMTYPE, str(outside)), _member("out/evil.py")],
            {"extension.toml": MANIFEST, "out/evil.py": EVIL})),
        "tar hard link to /etc/passwd": ("e.tar.gz", _tar(
            [_member("extension.toml"), _member("passwd", tarfile.LNKTYPE, "/etc/passwd")],
            {"extension.toml": MANIFEST})),
        "tar hard link ../": ("e.tar.gz", _tar(
            [_member("extension.toml"), _member("s", tarfile.LNKTYPE, "../outside/secret.txt")],
            {"extension.toml": MANIFEST})),
        "tar device file": ("e.tar.gz", _tar([_member("extension.toml"), _member("null", tarfile.CHRTYPE)],
                                             {"extension.toml": MANIFEST})),
        "tar fifo": ("e.tar.gz", _tar([_member("extension.toml"), _member("fifo", tarfile.FIFOTYPE)],
                                      {"extension.toml": MANIFEST})),
        "manifest id ../evil": ("e.zip", _zip([
            ("extension.toml", MANIFEST.replace(b'"zipslip"', b'"../evil"'), None)])),
        "manifest id with a newline": ("e.zip", _zip([("extension.toml", MANIFEST.replace(b'"zipslip"', b'"evil\\n"'),
                                                       None)])),
        "manifest id absolute": ("e.zip", _zip([("extension.toml", MANIFEST.replace(b'"zipslip"', b'"/tmp/evil"'),
                                                 None)])),
    }


def test_archive_members_cannot_escape_the_extension_folder(studio: Studio) -> None:
    """Through the Extensions tab's "Install archive" handler, as a user's upload reaches it."""
    outside = studio.root / "outside"
    manager: ExtensionManager = studio.services.extension_manager
    extensions, tmp = studio.data / "extensions", studio.data / "tmp"
    problems = []
    uploads = studio.root / "uploads"
    for label, (name, data) in archive_probes(outside).items():
        upload = uploads / label.replace(" ", "-").replace("/", "_") / name
        upload.parent.mkdir(parents=True, exist_ok=True)
        upload.write_bytes(data)
        before = everything_under(studio.root)
        message = run_extension_action(manager.install_from_archive, upload)
        after = everything_under(studio.root)
        if not message.startswith("⚠️"):
            problems.append(f"{label}: installed ({message})")
        if after - before:
            problems.append(f"{label}: left {sorted(str(p) for p in after - before)[:4]}")
        if any(tmp.glob("ext-install-*")):
            problems.append(f"{label}: a staging folder was left in tmp/")
    assert not problems, "\n".join(problems)
    assert not list(extensions.iterdir()), "something was installed"
    assert not (outside / "evil.py").exists() and not Path("/tmp/pwned").exists()


def test_server_folders_and_local_installs_are_refused_when_shared(tmp_path: Path) -> None:
    """Shared on the network, no request may name a folder on the server (batch folders, a local extension)."""
    shared = _studio(tmp_path, "--listen")
    outside = str(tmp_path / "outside")
    requests = [
        ("extras", {"input_dir": "/etc", "upscaler_1": "Lanczos"}),
        ("extras", {"input_dir": f"{shared.data}/../outside", "output_dir": outside, "upscaler_1": "Lanczos"}),
        ("img2img-batch", {**SMALL, "input_dir": "/etc"}),
        ("img2img-batch", {**SMALL, "input_dir": "../../..", "output_dir": outside}),
    ]
    with shared.client as client:
        for job_type, request in requests:
            response = client.post("/studio/v1/jobs", json={"type": job_type, "request": request})
            state = response.json()
            if response.status_code == 202:  # refused when it runs, if not at the door
                job = shared.services.jobs.get(state["id"])
                job.wait(30)
                state = {"status": job.error_status, "detail": job.error}
            status = state.get("status", response.status_code)
            assert status == 403 and "network" in str(state.get("detail")), (job_type, request, state)
        message = run_extension_action(shared.services.extension_manager.install_from_folder, Path("/etc"))
        assert message.startswith("⚠️") and "network" in message
    shared.services.jobs.stop()
    shared.services.download_jobs.stop()
    assert not (tmp_path / "outside").exists()


def test_a_recording_name_is_not_a_path(studio: Studio) -> None:
    """SadTalker copies the recording to a scratch file named after it: the name must not steer where."""
    names = ["../../../../outside/evil-audio.wav", "/tmp/evil-audio.wav", "..\\..\\evil-audio.wav",
             "%2e%2e%2fevil-audio.wav", "evil-audio.wav\x00.png", "." * 150 + "/evil-audio.wav"]
    for name in names:
        response = studio.client.post("/ext/sadtalker/generate", files={
            "image": ("face.png", png_bytes(portrait(96, 96))), "audio": (name, wav_bytes(voice(0.3)))})
        # The audio was decoded (from its scratch copy); the stub detector then found no face.
        assert response.status_code == 400 and "No face" in response.text, response.text
    strays = [p for p in studio.root.rglob("*evil-audio*")] + list(Path("/tmp").glob("evil-audio*"))
    assert not strays, strays
    assert not any((studio.data / "outputs").rglob("*.mp4"))
