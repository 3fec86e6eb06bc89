"""Jobs per second through the studio's job queue: in this process, and on a local Ray cluster with 1 and 2
workers, each with the tiny checkpoint the tests use.

Every run submits the same N txt2img jobs at once (batch count 1, so each job is one part) through
`services.jobs`, exactly as the UI and the API do, and times from the first submit to the last result. The
workers are started and warmed (checkpoint loaded) before timing. Ratios are against the 1-worker run measured
in the same process, so machine speed cancels out.

On this 2-core CPU machine each worker gets one core (OMP_NUM_THREADS=1), so 2 workers should approach 2x when
the per-job overhead (Ray round trips, file transfer, filing) is small next to the compute. A multi-GPU box runs
one worker per GPU (`--cluster-cpu-workers` is then unused): with compute-bound jobs it scales the same way, one
GPU's throughput per worker.

    venv/bin/python bench/cluster.py                  # 16 jobs, 64x64, 12 steps
    venv/bin/python bench/cluster.py --jobs 32 --size 128 --steps 20
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from modules.cluster.worker import WORKER_ARGS_ENV  # noqa: E402
from modules.paths import REPO_ROOT  # noqa: E402
from modules.services import Services, build_services  # noqa: E402


def request(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    return {"prompt": "a lighthouse at dusk", "steps": args.steps, "width": args.size, "height": args.size,
            "sampler_name": "Euler", "seed": seed, "do_not_save_grid": True}


def jobs_per_second(services: Services, args: argparse.Namespace) -> float:
    warm = [services.jobs.submit("txt2img", request(args, 0)) for _ in range(4)]  # loads the model everywhere
    for job in warm:
        job.wait()
    started = time.perf_counter()
    jobs = [services.jobs.submit("txt2img", request(args, seed)) for seed in range(args.jobs)]
    for job in jobs:
        job.wait()
        if job.error:
            raise SystemExit(f"a job failed: {job.error}")
    return args.jobs / (time.perf_counter() - started)


def on_cluster(data: Path, workers: int, args: argparse.Namespace) -> float:
    services = build_services(["--data-dir", str(data), "--nowebui", "--cluster", "auto",
                               "--cluster-cpu-workers", str(workers)], {})
    services.jobs.start()
    try:
        while sum(w.state == "idle" for w in services.jobs.executor.workers()) < workers:
            time.sleep(0.2)
        return jobs_per_second(services, args)
    finally:
        services.jobs.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()

    import ray

    from tests.fixtures.tiny_models import save_tiny_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        save_tiny_checkpoint(data / "models" / "Stable-diffusion", "sd1", name="tiny", seed=0)
        local = build_services(["--data-dir", str(data), "--nowebui"], {})
        local.jobs.start()
        in_process = jobs_per_second(local, args)
        local.jobs.stop()

        ray.init(num_cpus=4, num_gpus=0, include_dashboard=False, log_to_driver=False, namespace="sd-studio-bench",
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1",
                                           "HF_HUB_OFFLINE": "1", WORKER_ARGS_ENV: f"--data-dir {data}"}})
        try:
            one = on_cluster(data, 1, args)
            two = on_cluster(data, 2, args)
        finally:
            ray.shutdown()

    print(f"machine: {os.cpu_count()} CPU cores, no GPU; {args.jobs} txt2img jobs, {args.size}x{args.size}, "
          f"{args.steps} steps, tiny sd1 checkpoint")
    print(f"{'run':<24}{'jobs/s':>10}{'vs 1 worker':>14}")
    for name, rate in (("in process (no Ray)", in_process), ("cluster, 1 worker", one), ("cluster, 2 workers", two)):
        print(f"{name:<24}{rate:>10.2f}{rate / one:>13.2f}x")


if __name__ == "__main__":
    main()
