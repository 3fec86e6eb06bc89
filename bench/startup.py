"""Seconds from process start to the first HTTP 200 of the page.

Runs `python launch.py --skip-install` in a fresh data dir several times and reports the median, next to a
baseline measured in the same run: the smallest Gradio app (one textbox) mounted on FastAPI and served by
uvicorn the same way. The ratio says how much our start-up adds on top of Gradio's own floor.

    venv/bin/python bench/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.server import free_port  # noqa: E402

BASELINE_APP = textwrap.dedent("""
    import sys, gradio as gr, uvicorn
    from fastapi import FastAPI
    with gr.Blocks() as demo:
        gr.Textbox()
    app = gr.mount_gradio_app(FastAPI(), demo, path="/", ssr_mode=False)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
""")


def time_to_first_page(argv: list[str], port: int, timeout: float = 120) -> float:
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - started < timeout:
            if process.poll() is not None:
                raise RuntimeError(f"{argv} exited with {process.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"no page within {timeout} s")
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    ours, baseline = [], []
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "baseline_app.py"
        script.write_text(BASELINE_APP)
        for n in range(runs):
            port = free_port()
            ours.append(time_to_first_page([sys.executable, "launch.py", "--skip-install", "--data-dir",
                                            f"{tmp}/data{n}", "--port", str(port)], port))
            port = free_port()
            baseline.append(time_to_first_page([sys.executable, str(script), str(port)], port))
    ours_s, base_s = statistics.median(ours), statistics.median(baseline)
    print(f"runs: {runs}")
    print(f"SD Studio, process start -> first 200 of the page: median {ours_s:.2f} s "
          f"(min {min(ours):.2f}, max {max(ours):.2f})")
    print(f"baseline, minimal Gradio app on FastAPI/uvicorn:    median {base_s:.2f} s "
          f"(min {min(baseline):.2f}, max {max(baseline):.2f})")
    print(f"ratio SD Studio / baseline: {ours_s / base_s:.2f}x")


if __name__ == "__main__":
    main()
