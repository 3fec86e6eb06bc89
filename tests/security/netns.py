"""A private LAN for security tests: the server runs in one network namespace, clients in another, joined by a
veth pair whose two addresses exist only inside those namespaces.

So `--listen` is tested for real (the server binds 0.0.0.0 and a client on another address reaches it) without
touching the host's network: nothing is created in the root namespace, and deleting the namespaces removes the
veth pair. Needs root (`ip netns add`); callers skip with `unavailable()`'s reason when it fails.

Clients are short `ip netns exec <ns> python -m tests.security.netns client BATCH.json` processes that send a
batch of request specs and print the answers as JSON; see `client_main`. Every batch is bounded in count and time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
IP = shutil.which("ip") or "/usr/sbin/ip"
# Namespace names are `<PREFIX><pid>-<n>-srv|cli`, so a later run can tell its own leftovers from live ones.
PREFIX = "sdlan"
SERVER_IP, CLIENT_IP = "10.231.0.1", "10.231.0.2"
PORT = 7860
MAX_BATCH = 400  # requests per client process
MAX_BATCH_S = 240.0  # wall time per client process
_SEQUENCE = count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IP, *args], capture_output=True, text=True, timeout=20, check=check)


def unavailable() -> str | None:
    """Why namespaces cannot be made here (not root, no iproute2, a container without CAP_SYS_ADMIN), or None."""
    if not Path(IP).exists():
        return "needs iproute2's `ip` command to make network namespaces"
    if os.geteuid() != 0:
        return "needs root to make network namespaces (ip netns add); CI runs these tests as root"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        result = _ip("netns", "add", probe, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`ip netns add` could not run: {e}"
    if result.returncode != 0:
        return f"`ip netns add` failed ({result.stderr.strip()}); network namespaces are not allowed here"
    _ip("netns", "delete", probe, check=False)
    return None


def remove_stale() -> None:
    """Delete namespaces left by runs of this harness that died (their pid is gone), and stop the servers still
    running inside them (processes this harness started there; nothing else can be in them)."""
    listing = _ip("netns", "list", check=False).stdout.split()
    for name in (n for n in listing if n.startswith(PREFIX)):
        owner = name[len(PREFIX):].split("-", 1)[0]
        if owner.isdigit() and _alive(int(owner)):
            continue
        for pid in _ip("netns", "pids", name, check=False).stdout.split():
            if pid.isdigit():
                _kill(int(pid))
        _ip("netns", "delete", name, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@dataclass(frozen=True)
class Lan:
    server_ns: str
    client_ns: str
    server_ip: str = SERVER_IP
    client_ip: str = CLIENT_IP

    def url(self, port: int = PORT) -> str:
        return f"http://{self.server_ip}:{port}"

    def requests(self, specs: Sequence[dict[str, Any]], *, from_server: bool = False,
                 budget_s: float = 60.0) -> list[dict[str, Any]]:
        """Send `specs` from the client namespace (or, with `from_server`, from the server's own loopback) and
        return one answer per spec: `status`, `headers`, `body` (text, truncated) or `error`."""
        return self.start_requests(specs, from_server=from_server, budget_s=budget_s).result()

    def start_requests(self, specs: Sequence[dict[str, Any]], *, from_server: bool = False,
                       budget_s: float = 60.0) -> PendingRequests:
        """`requests` without waiting: the answers come from `.result()` (a slow generation can run meanwhile)."""
        if len(specs) > MAX_BATCH:
            raise ValueError(f"{len(specs)} requests in one batch; the harness allows {MAX_BATCH}")
        budget_s = min(budget_s, MAX_BATCH_S)
        ns = self.server_ns if from_server else self.client_ns
        fd, name = tempfile.mkstemp(prefix=f"{PREFIX}-batch-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump({"specs": list(specs), "budget_s": budget_s}, f)
        process = subprocess.Popen(
            [IP, "netns", "exec", ns, sys.executable, "-m", "tests.security.netns", "client", name],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=_client_env())
        return PendingRequests(process, ns, budget_s, Path(name))


@dataclass
class PendingRequests:
    process: subprocess.Popen[str]
    ns: str
    budget_s: float
    batch_file: Path

    def result(self) -> list[dict[str, Any]]:
        try:
            out, err = self.process.communicate(timeout=self.budget_s + 30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
        finally:
            self.batch_file.unlink(missing_ok=True)
        if self.process.returncode != 0:
            raise RuntimeError(f"client in {self.ns} failed ({self.process.returncode}):\n{err[-3000:]}")
        return json.loads(out)


@contextmanager
def private_lan() -> Iterator[Lan]:
    """Two fresh namespaces joined by a veth pair (server side SERVER_IP, client side CLIENT_IP, a /30 that only
    they share), deleted on exit together with anything still running in them."""
    remove_stale()
    tag = f"{PREFIX}{os.getpid()}-{next(_SEQUENCE)}"
    lan = Lan(f"{tag}-srv", f"{tag}-cli")
    try:
        for ns in (lan.server_ns, lan.client_ns):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        # Created inside the server namespace with its peer placed straight into the client one: the root
        # namespace never holds either end.
        _ip("-n", lan.server_ns, "link", "add", "lan0", "type", "veth", "peer", "name", "lan0", "netns", lan.client_ns)
        for ns, address in ((lan.server_ns, lan.server_ip), (lan.client_ns, lan.client_ip)):
            _ip("-n", ns, "addr", "add", f"{address}/30", "dev", "lan0")
            _ip("-n", ns, "link", "set", "lan0", "up")
        yield lan
    finally:
        for ns in (lan.server_ns, lan.client_ns):
            for pid in _ip("netns", "pids", ns, check=False).stdout.split():
                if pid.isdigit():
                    _kill(int(pid))
            _ip("netns", "delete", ns, check=False)


def _client_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return {**env, "PYTHONPATH": str(REPO)}


# --- the server -------------------------------------------------------------------------------------------


@dataclass
class LanServer:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    routes_path: Path | None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def routes(self) -> list[dict[str, Any]]:
        """Every route of the running app as [{path, methods, mounted_under}], listed by the app process itself."""
        assert self.routes_path is not None, "start the server with list_routes=True"
        return json.loads(self.routes_path.read_text())

    def wait_until_up(self, timeout: float = 120) -> None:
        """Wait until the app has printed its URL (the test process cannot reach the namespace to poll it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            if "Running on local URL:" in self.log() and (self.routes_path is None or self.routes_path.exists()):
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not start within {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        stop_all(self)


def stop_all(*servers: LanServer) -> None:
    """Ask every server to stop at once (Ctrl+C, as a user would), then wait; kill one that takes over 10 s."""
    running = [s for s in servers if s.process.poll() is None]
    for server in running:
        server.process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 10
    for server in running:
        try:
            server.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(5)


def start_lan_server(lan: Lan, data_dir: Path, *flags: str, list_routes: bool = False, timeout: float = 120,
                     env: dict[str, str] | None = None) -> LanServer:
    """`launch_lan_server`, then wait until the server is up."""
    server = launch_lan_server(lan, data_dir, *flags, list_routes=list_routes, env=env)
    server.wait_until_up(timeout)
    return server


def launch_lan_server(lan: Lan, data_dir: Path, *flags: str, list_routes: bool = False,
                      env: dict[str, str] | None = None) -> LanServer:
    """Start the app in the server namespace as a user does (`launch.py --skip-install …`), without waiting.
    With `list_routes`, the same `modules.app.main` runs through `_serve_listing_routes`, which also writes the
    app's route table to a file once the app is built."""
    data_dir.mkdir(parents=True, exist_ok=True)
    tag = lan.server_ns.rsplit("-", 1)[0]
    log_path = data_dir.parent / f"server-{tag}.log"
    routes_path = data_dir.parent / f"routes-{tag}.json" if list_routes else None
    argv = ["--skip-install", "--data-dir", str(data_dir), "--port", str(PORT), *flags]
    if routes_path is not None:
        command = [sys.executable, "-m", "tests.security.netns", "serve", str(routes_path), *argv]
    else:
        command = [sys.executable, str(REPO / "launch.py"), *argv]
    inherited = {k: v for k, v in os.environ.items() if k != "COMMANDLINE_ARGS"}
    full_env = {**inherited, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO), **(env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen([IP, "netns", "exec", lan.server_ns, *command], cwd=REPO, stdout=log,
                                   stderr=subprocess.STDOUT, env=full_env)
    return LanServer(process, lan.url(), log_path, routes_path)


def list_app_routes(app: Any) -> list[dict[str, Any]]:
    """Every (path, methods) the app answers, through mounts (the Gradio UI) and included routers."""
    from fastapi.routing import iter_route_contexts
    from starlette.routing import Mount

    found: list[dict[str, Any]] = []

    def walk(routes: Any, prefix: str, mount: str | None) -> None:
        for context in iter_route_contexts(routes):
            route = context.original_route
            if isinstance(route, Mount):
                walk(route.routes, prefix + route.path, type(route.app).__module__)
                continue
            methods = sorted(getattr(context, "methods", None) or ["WEBSOCKET"])
            found.append({"path": prefix + (context.path or ""), "methods": methods, "mounted_under": mount})

    walk(app.routes, "", None)
    return found


def _serve_listing_routes(routes_path: Path, argv: list[str]) -> int:
    """`modules.app.main(argv)`, with `create_app` wrapped to write the finished app's routes first (this test
    process's own copy of the module; the app is otherwise untouched)."""
    from modules import app as app_module

    build = app_module.create_app

    def create_and_list(services: Any) -> Any:
        app = build(services)
        partial = routes_path.with_suffix(".partial")
        partial.write_text(json.dumps(list_app_routes(app)))
        partial.replace(routes_path)
        return app

    app_module.create_app = create_and_list
    return app_module.main(argv)


# --- the client (runs inside a namespace) -----------------------------------------------------------------


def _one_request(http: Any, spec: dict[str, Any]) -> dict[str, Any]:
    import httpx

    auth = tuple(spec["auth"]) if spec.get("auth") else None
    limit = int(spec.get("max_bytes", 65536))
    try:
        with http.stream(spec.get("method", "GET"), spec["url"], headers=spec.get("headers"), json=spec.get("json"),
                         data=spec.get("data"), content=spec.get("content"), auth=auth,
                         timeout=float(spec.get("timeout", 5.0))) as response:
            answer: dict[str, Any] = {"status": response.status_code, "headers": dict(response.headers)}
            body = b""
            try:
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) >= limit:
                        break
            except httpx.HTTPError as e:  # a stream that stays open (SSE) ends at the read timeout
                answer["stream_error"] = type(e).__name__
            answer["body"] = body[:limit].decode("utf-8", "replace")
            return answer
    except httpx.HTTPError as e:
        return {"status": None, "error": f"{type(e).__name__}: {e}"}


def _poll(http: Any, spec: dict[str, Any], deadline: float) -> dict[str, Any]:
    """Repeat a GET until its JSON `until["key"]` is one of `until["in"]` (a job finishing), or time runs out."""
    until = spec["until"]
    stop = min(deadline, time.monotonic() + float(until.get("wait_s", 60.0)))
    while True:
        answer = _one_request(http, spec)
        try:
            if json.loads(answer.get("body") or "null").get(until["key"]) in until["in"]:
                return answer
        except (ValueError, AttributeError):
            pass
        if time.monotonic() > stop:
            return {**answer, "error": "polling ran out of time"}
        time.sleep(0.2)


def _gradio_call(http: Any, spec: dict[str, Any], configs: dict[str, Any]) -> dict[str, Any]:
    """Trigger UI events as the page does (queue/join, then the SSE stream), in one session, so an event can
    rely on state an earlier one set (a sub-tab's `select` choosing the mode). `spec["events"]` lists them, or
    `spec` is the one event: `elem_id` and `event` (default click) of the component, `inputs` (elem_id -> value;
    other inputs keep their initial value) and `uploads` (elem_id -> [file name, base64 bytes], uploaded first as
    the page uploads files). The answer is the last event's: `output` is its last output (a generator's last
    yield)."""
    import secrets

    base = spec["base"]
    if base not in configs:
        configs[base] = http.get(base + "/config", timeout=10).json()
    session = secrets.token_hex(8)
    answer: dict[str, Any] = {}
    for event in spec.get("events") or [spec]:
        answer = _gradio_event(http, base, configs[base], session, event)
        if answer.get("status") != 200:
            break
    return answer


def _gradio_event(http: Any, base: str, config: dict[str, Any], session: str, event: dict[str, Any]) -> dict[str, Any]:
    import base64

    components = {c["id"]: c for c in config["components"]}
    by_elem = {c.get("props", {}).get("elem_id"): c["id"] for c in config["components"]}
    target = by_elem[event["elem_id"]]
    dep = next(d for d in config["dependencies"] if [target, event.get("event", "click")] in d["targets"])
    api = base + config.get("api_prefix", "/gradio_api")
    given = dict(event.get("inputs", {}))
    for elem_id, (name, content) in event.get("uploads", {}).items():
        stored = http.post(api + "/upload", files=[("files", (name, base64.b64decode(content)))], timeout=10)
        given[elem_id] = {"path": stored.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}
    data = []
    for input_id in dep["inputs"]:
        props = components[input_id].get("props", {})
        data.append(given.get(props.get("elem_id"), props.get("value")))
    joined = http.post(api + "/queue/join", json={"data": data, "event_data": None, "fn_index": dep["id"],
                                                  "trigger_id": target, "session_hash": session}, timeout=10)
    if joined.status_code != 200:
        return {"status": joined.status_code, "body": joined.text[:2000]}
    deadline = time.monotonic() + float(event.get("timeout", 30.0))
    last: Any = None
    with http.stream("GET", api + "/queue/data", params={"session_hash": session}, timeout=10) as stream:
        for line in stream.iter_lines():
            if time.monotonic() > deadline:
                break
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            output = message.get("output") or {}
            if message.get("msg") == "process_generating":
                last = output.get("data", last)
            elif message.get("msg") == "process_completed":
                return {"status": 200, "success": message.get("success"), "output": output.get("data") or last,
                        "error": output.get("error")}
    return {"status": None, "error": "no process_completed message in time"}


def client_main() -> int:
    import httpx

    batch = Path(sys.argv[2])
    job = json.loads(batch.read_text())
    batch.unlink()  # read once; nothing is left behind even when nobody collects the answers
    specs, deadline = job["specs"][:MAX_BATCH], time.monotonic() + min(float(job["budget_s"]), MAX_BATCH_S)
    answers: list[dict[str, Any]] = []
    configs: dict[str, Any] = {}
    # trust_env=False: the answer must come from the namespace's own network, never a proxy from the environment.
    with httpx.Client(trust_env=False, follow_redirects=False) as http:
        for spec in specs:
            if time.monotonic() > deadline:
                answers.append({"status": None, "error": "not sent: the batch ran out of time"})
            elif spec.get("kind") == "gradio":
                answers.append(_gradio_call(http, spec, configs))
            elif "until" in spec:
                answers.append(_poll(http, spec, deadline))
            else:
                answers.append(_one_request(http, spec))
    print(json.dumps(answers))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["client"]:
        sys.exit(client_main())
    if sys.argv[1:2] == ["serve"]:
        sys.exit(_serve_listing_routes(Path(sys.argv[2]), sys.argv[3:]))
    sys.exit("usage: python -m tests.security.netns client BATCH_JSON | serve ROUTES_JSON [app flags]")
