"""Load on the real server: 10 concurrent A1111-API clients, 3 txt2img requests each. Nothing is lost: all 30
finish with the right seed in their image and a file on disk. Throughput and latency are printed (run with -s);
the test never asserts on timings."""

from __future__ import annotations

import base64
import io
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from modules.engine.image_metadata import read_image_info
from modules.engine.infotext import parse_infotext
from tests.e2e.server import start_server
from tests.fixtures.tiny_models import save_tiny_checkpoint

pytestmark = pytest.mark.e2e

CLIENTS, REQUESTS = 10, 3


def test_ten_clients_three_requests_each_lose_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    save_tiny_checkpoint(data / "models" / "Stable-diffusion", "sd1", name="tiny")
    server = start_server(data, "--api")
    try:
        httpx.post(f"{server.url}/sdapi/v1/txt2img", json={"steps": 1, "width": 64, "height": 64}, timeout=120)

        def client(index: int) -> list[tuple[int, float, str]]:
            done = []
            with httpx.Client(base_url=server.url, timeout=300) as http:
                for n in range(REQUESTS):
                    seed = 1000 + index * 10 + n
                    started = time.perf_counter()
                    r = http.post("/sdapi/v1/txt2img", json={
                        "prompt": f"client {index} request {n}", "seed": seed, "steps": 3, "width": 64,
                        "height": 64, "sampler_name": "Euler", "save_images": True})
                    r.raise_for_status()
                    done.append((seed, time.perf_counter() - started, r.json()["images"][0]))
            return done

        started = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = [item for batch in pool.map(client, range(CLIENTS)) for item in batch]
        elapsed = time.perf_counter() - started
    finally:
        server.stop()

    assert len(results) == CLIENTS * REQUESTS
    for seed, _, image_b64 in results:
        infotext, _ = read_image_info(Image.open(io.BytesIO(base64.b64decode(image_b64))))
        assert parse_infotext(infotext)["Seed"] == str(seed)
    saved = {p.name.split("-", 1)[1].removesuffix(".png") for p in (data / "outputs" / "txt2img-images").rglob("*.png")}
    assert {str(seed) for seed, _, _ in results} <= saved
    latencies = sorted(latency for _, latency, _ in results)
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    print(f"\nload: {len(results)} requests from {CLIENTS} clients in {elapsed:.1f} s = "
          f"{len(results) / elapsed:.2f} req/s; latency p50 {statistics.median(latencies):.2f} s, p95 {p95:.2f} s")
