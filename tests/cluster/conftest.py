"""A real local Ray cluster for the cluster tests: started once per session, in this process, with logical CPUs
for the workers (one each); every worker builds its engine from a data dir holding a tiny checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modules.cluster.worker import WORKER_ARGS_ENV
from modules.paths import REPO_ROOT
from tests.fixtures.tiny_models import save_tiny_checkpoint


def data_with_tiny_model(root: Path, name: str = "tiny") -> Path:
    save_tiny_checkpoint(root / "models" / "Stable-diffusion", "sd1", name=name, seed=0)
    return root


@pytest.fixture(scope="session")
def worker_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return data_with_tiny_model(tmp_path_factory.mktemp("worker-data"))


@pytest.fixture(scope="session")
def local_ray(worker_data: Path) -> Iterator[None]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=8, num_gpus=0, include_dashboard=False, namespace="sd-studio-tests", log_to_driver=False,
             object_store_memory=200 * 1024 * 1024,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1",
                                       "HF_HUB_OFFLINE": "1", WORKER_ARGS_ENV: f"--data-dir {worker_data}"}})
    try:
        yield
    finally:
        ray.shutdown()
