"""Denoising speed (it/s), seconds per image and peak memory of txt2img: SD Studio's engine vs plain diffusers.

What is measured, per model family, in one process and on the same weights:

* The weights are random, at true size: SD 1.5 (UNet 860 M parameters) and SDXL (2.6 G), built from the bundled
  `modules/engine/models/configs/<family>` configs and saved once as single-file LDM `.safetensors` in
  `bench/.cache/` (see `_common.random_checkpoint`). The engine loads them from `models/Stable-diffusion` of a
  temporary data dir, through the same path as a user's checkpoint.
* Baseline: plain diffusers (`StableDiffusionPipeline` / `StableDiffusionXLPipeline`) loaded with
  `from_single_file` from the same file and the same bundled config folder; fp16 on CUDA, fp32 on CPU, diffusers'
  default attention (SDPA on torch 2); `pipe(prompt, num_inference_steps=..., guidance_scale=...)`.
* Engine: `build_services(["--data-dir", tmp, ...flags])`, then txt2img jobs through `services.jobs`, once per
  switch set: defaults; `channels_last`; TF32 off (it is on by default; CUDA only); `compile` (CUDA only);
  `--medvram`; `--lowvram` (both GPU only: on CPU the engine runs them as the default); attention slicing;
  `--xformers` when it imports. Settings-type switches are set with `services.engine.memory.reconfigure(...)`
  before the checkpoint loads, which is when the engine applies them.
* Both sides use the Euler sampler (one UNet call per step; diffusers' own default for SD 1.5, PNDM, makes one
  extra call) at CFG 7, batch 1, the same prompt and seed.

How: each configuration loads the checkpoint (timed: "load s"), makes one warm-up image (timed: "warm-up s"; for
`compile` this is the compilation), then `--runs` timed images. it/s = (steps - 1) / time between the end of
denoising step 1 and the end of the last step, taken in the step callback (diffusers' `callback_on_step_end` for
the baseline; for the engine, its per-step progress report, timestamped by the job's context: the bench registers
a `bench-txt2img` job type that is `engine.txt2img` with that context), with a CUDA sync at both ends. So text
encoding, VAE decode and image conversion are excluded; s/image is end to end (job submit to result; the pipe call
for the baseline), images not saved. Medians over the timed runs; "spread" is (max - min) / median of their it/s.
"vs diffusers" is the ratio to the first baseline row; the baseline is measured again at the end of each family,
so the drift of the machine during the run is in the table too. Peak memory covers the timed runs:
`torch.cuda.max_memory_allocated()` on CUDA, sampled process RSS everywhere. diffusers' console progress bars are
turned off on both sides (`set_progress_bar_config(disable=True)`); "applied" is what the engine's memory manager
reports it applied (its `PreparedRecord`), the check that a switch took effect.

On CUDA the defaults are the reference workloads: SD 1.5 at 512x512 and SDXL at 1024x1024, 20 steps. On CPU the
run is REDUCED (SD 1.5 at 128x128, 5 steps, 2 runs; SDXL only with `--sdxl`, at 256x256), and says so: a full
SD 1.5 step takes seconds on two cores. On an otherwise idle 2-core machine the CPU default run takes about
4 minutes (plus about 40 s once to build the random SD 1.5 weights, 2 GiB; SDXL: about 2 minutes and 6.5 GiB once,
and about 15 GiB of RAM while it runs on CPU). Each table prints the load average: when other processes compete
for the cores it says BUSY, and the run is slower and noisier (see "spread" and the repeated baseline).
On CUDA, `compile` warms up for minutes per family; split long runs with `--families` / `--switches`.

    venv/bin/python bench/generate.py                       # CUDA if available, else the reduced CPU run
    venv/bin/python bench/generate.py --device cpu --sdxl
    venv/bin/python bench/generate.py --families sd1 --switches default,compile --runs 10
    venv/bin/python bench/generate.py --size 256 --steps 8
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (  # noqa: E402
    PeakMemory,
    family_config_dir,
    format_gib,
    machine_description,
    parameter_counts,
    random_checkpoint,
    release_memory,
    warm_page_cache,
)

PROMPT = "a photograph of an astronaut riding a horse on the moon, highly detailed"
SEED = 1234
SAMPLER = "Euler"
BENCH_JOB = "bench-txt2img"
FIRST_PASS_STEP = re.compile(r"step (\d+)/\d+")  # the engine's progress text for a first-pass step
FAMILIES = ("sd1", "sdxl")
FAMILY_NAMES = {"sd1": "SD 1.5", "sdxl": "SDXL"}
FULL_SIZE = {"sd1": 512, "sdxl": 1024}
CPU_SIZE = {"sd1": 128, "sdxl": 256}
FULL_STEPS, CPU_STEPS = 20, 5
FULL_RUNS, CPU_RUNS = 5, 2

# Published anchors for context (shared/reference/perf-anchors.md; stable-fast README, H100, fp16, batch 1;
# peak memory: OneDiff READMEs, PyTorch row). Other stacks and step counts: the same-run baseline is the yardstick.
ANCHORS = {
    "sd1": "H100, SD 1.5 512x512 fp16: diffusers 54.5 it/s, +torch.compile 66.0, stable-fast 104.6 "
           "(stable-fast README); peak 2.62 GiB (OneDiff README, PyTorch, 20 steps)",
    "sdxl": "H100, SDXL 1024x1024 fp16: diffusers 14.9 it/s, +torch.compile 18.5, stable-fast 21.6 "
            "(stable-fast README); peak 10.47 GiB (OneDiff README, PyTorch)",
}


@dataclass(frozen=True)
class Switch:
    """One engine configuration: command-line flags plus `MemoryConfig` settings changed before the load."""

    key: str
    label: str
    flags: tuple[str, ...] = ()
    settings: tuple[tuple[str, Any], ...] = ()
    gpu_only: bool = False
    """On CPU the engine treats it as the default (offload, TF32, compile, xformers), so the default run skips it."""


SWITCHES: tuple[Switch, ...] = (
    Switch("default", "engine default"),
    Switch("channels_last", "channels_last", settings=(("channels_last", True),)),
    Switch("tf32", "tf32 off (default on)", settings=(("tf32", False),), gpu_only=True),
    Switch("compile", "compile", settings=(("compile", True),), gpu_only=True),
    Switch("medvram", "--medvram", flags=("--medvram",), gpu_only=True),
    Switch("lowvram", "--lowvram", flags=("--lowvram",), gpu_only=True),
    Switch("attention_slicing", "attention slicing", settings=(("attention_slicing", True),)),
    Switch("xformers", "--xformers", flags=("--xformers",), gpu_only=True),
)


@dataclass(frozen=True)
class Plan:
    """What to run, resolved from the flags and the device."""

    device: torch.device
    families: tuple[str, ...]
    sizes: dict[str, int]
    steps: int
    runs: int
    cfg: float
    switches: tuple[Switch, ...]
    compile_mode: str | None
    reduced: bool
    skipped: tuple[str, ...]


@dataclass
class Row:
    """The measurements of one configuration."""

    label: str
    its: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    cuda_peak: int | None = None
    rss_peak: int | None = None
    load_s: float | None = None
    warmup_s: float | None = None
    applied: str = ""
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def its_median(self) -> float | None:
        return statistics.median(self.its) if self.its else None


def main() -> None:
    args = parse_args()
    # The app does this at start (modules.app.main); the engine is measured as the app runs it.
    from modules.engine.memory import share_heap_between_threads

    share_heap_between_threads()
    quiet_libraries()
    plan = make_plan(args)
    print_header(plan)
    for family in plan.families:
        checkpoint = random_checkpoint(family)
        warm_page_cache(checkpoint)
        load_before = os.getloadavg()[0]
        rows = [progress(family, measure_baseline(plan, family, checkpoint, "diffusers baseline"))]
        with tempfile.TemporaryDirectory(prefix="sd-studio-bench-") as data_dir:
            link_checkpoint(Path(data_dir), checkpoint)
            for switch in plan.switches:
                rows.append(progress(family, measure_engine(plan, family, checkpoint, switch, Path(data_dir))))
        # Measured again last: how far the machine drifted during the run (other load, heat), in the same table.
        rows.append(progress(family, measure_baseline(plan, family, checkpoint, "diffusers baseline again")))
        print()
        print_table(plan, family, checkpoint, rows, (load_before, os.getloadavg()[0]))


# -- plan ----------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    parser.add_argument("--families", default=None,
                        help="comma-separated, from sd1,sdxl (default: both on CUDA, sd1 on CPU)")
    parser.add_argument("--sdxl", action="store_true", help="on CPU, add SDXL to the default families")
    parser.add_argument("--size", type=int, default=None,
                        help="width = height for every family (default: 512/1024 on CUDA, 128/256 on CPU)")
    parser.add_argument("--steps", type=int, default=None, help=f"steps (default {FULL_STEPS}, CPU {CPU_STEPS})")
    parser.add_argument("--runs", type=int, default=None, help=f"timed runs (default {FULL_RUNS}, CPU {CPU_RUNS})")
    parser.add_argument("--cfg", type=float, default=7.0, help="CFG scale (default 7)")
    parser.add_argument("--switches", default=None,
                        help=f"comma-separated engine switch sets, from {','.join(s.key for s in SWITCHES)} "
                             "(default: all that apply to the device)")
    parser.add_argument("--compile-mode", default=None,
                        choices=("max-autotune-no-cudagraphs", "reduce-overhead", "default"),
                        help="torch.compile mode for the compile switch (default: the engine's)")
    return parser.parse_args()


def make_plan(args: argparse.Namespace) -> Plan:
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    families = tuple(split_list(args.families, FAMILIES, "--families")) if args.families else (
        FAMILIES if cuda or args.sdxl else ("sd1",))
    size_table = FULL_SIZE if cuda else CPU_SIZE
    sizes = {family: args.size or size_table[family] for family in families}
    steps = args.steps or (FULL_STEPS if cuda else CPU_STEPS)
    runs = args.runs or (FULL_RUNS if cuda else CPU_RUNS)
    if steps < 2 or runs < 1:
        raise SystemExit("--steps must be at least 2 (it/s is timed from step 1 to the last) and --runs at least 1")
    if any(size % 8 for size in sizes.values()):
        raise SystemExit("--size must be a multiple of 8")
    by_key = {s.key: s for s in SWITCHES}
    skipped: list[str] = []
    if args.switches:
        switches = tuple(by_key[key] for key in split_list(args.switches, tuple(by_key), "--switches"))
    else:
        switches = tuple(s for s in SWITCHES if usable_by_default(s, device, skipped))
    reduced = any(sizes[f] < FULL_SIZE[f] for f in families) or steps < FULL_STEPS
    return Plan(device, families, sizes, steps, runs, args.cfg, switches, args.compile_mode, reduced, tuple(skipped))


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {requested}: CUDA is not available here")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device {requested}: use auto, cpu, cuda or cuda:N")
    return device


def split_list(value: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        raise SystemExit(f"{flag}: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(allowed)}")
    return items


def usable_by_default(switch: Switch, device: torch.device, skipped: list[str]) -> bool:
    if switch.gpu_only and device.type != "cuda":
        skipped.append(f"{switch.key} (no effect on CPU)")
        return False
    if switch.key == "xformers" and importlib.util.find_spec("xformers") is None:
        skipped.append("xformers (not installed)")
        return False
    return True


def quiet_libraries() -> None:
    """Errors only from the app's and the libraries' loggers; what the engine applied is read from its record."""
    import diffusers
    import transformers

    logging.basicConfig(level=logging.ERROR, format="  [%(name)s] %(message)s")
    # Each configuration starts the app anew; an extension that fails to load is reported by the app itself and
    # has no bearing on txt2img speed, so its error would only be repeated once per row here.
    logging.getLogger("modules.extensions").setLevel(logging.CRITICAL)
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()  # the "Loading pipeline components" bars
    transformers.utils.logging.set_verbosity_error()


def print_header(plan: Plan) -> None:
    import diffusers
    import transformers

    print("SD Studio txt2img benchmark: engine vs plain diffusers, same weights, same run")
    print(f"machine: {machine_description(plan.device)}")
    print(f"versions: python {sys.version.split()[0]}, torch {torch.__version__}, diffusers {diffusers.__version__}, "
          f"transformers {transformers.__version__}; SD Studio at {code_revision()}")
    dtype = "float16" if plan.device.type == "cuda" else "float32"
    print(f"device: {plan.device}, dtype {dtype} (engine: --precision auto; baseline: torch_dtype={dtype})")
    if plan.reduced:
        full = ", ".join(f"{f} {FULL_SIZE[f]}x{FULL_SIZE[f]}" for f in plan.families)
        print(f"*** REDUCED RUN: {plan.steps} steps at "
              f"{', '.join(f'{f} {s}x{s}' for f, s in plan.sizes.items())} (reference: {FULL_STEPS} steps, {full} "
              f"on CUDA). Compare the ratios, not the it/s, with GPU numbers. ***")
    if plan.skipped:
        print(f"skipped switch sets: {', '.join(plan.skipped)}; --switches runs them anyway")
    print()


def code_revision() -> str:
    """The checked-out commit (read-only git), so a result can be tied to the code it measured."""
    import subprocess

    try:
        found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parents[1],
                               capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown commit"
    return f"commit {found.stdout.strip()} (uncommitted changes not shown)"


# -- timing --------------------------------------------------------------------------------------------------


class StepClock:
    """Timestamps at the end of denoising step 1 and of the last step of each image, with a CUDA sync at both."""

    def __init__(self, steps: int, device: torch.device) -> None:
        self.steps = steps
        self.device = device
        self.first: float | None = None
        self.last: float | None = None

    def start_image(self) -> None:
        self.first = self.last = None

    def step_done(self, index: int) -> None:
        """Call at the end of step `index` (0-based)."""
        if index not in (0, self.steps - 1):
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        if index == 0:
            self.first = time.perf_counter()
        else:
            self.last = time.perf_counter()

    def rate(self) -> float:
        """Steps per second between the two timestamps of the image just made."""
        if self.first is None or self.last is None or self.last <= self.first:
            raise RuntimeError("the step callback did not see the first and last steps (interrupted job?)")
        return (self.steps - 1) / (self.last - self.first)


def timed_images(row: Row, plan: Plan, clock: StepClock, make_image: Callable[[], list[str]]) -> None:
    """One warm-up image, then `plan.runs` timed ones, into `row` (rates, seconds, peak memory, notes)."""
    started = time.perf_counter()
    clock.start_image()
    row.notes += make_image()
    row.warmup_s = time.perf_counter() - started
    with PeakMemory(plan.device) as peak:
        for _ in range(plan.runs):
            clock.start_image()
            started = time.perf_counter()
            row.notes += make_image()
            row.seconds.append(time.perf_counter() - started)
            row.its.append(clock.rate())
    row.cuda_peak, row.rss_peak = peak.cuda_bytes, peak.rss_bytes


@contextmanager
def recorded_failure(row: Row) -> Iterator[None]:
    """A configuration that fails (OOM, compile error) gets its error in the table; the others still run."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - any failure is a result to report, not a reason to stop
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        row.error = f"{type(error).__name__}: {first_line[:160]}"


# -- baseline: plain diffusers -------------------------------------------------------------------------------


def measure_baseline(plan: Plan, family: str, checkpoint: Path, label: str) -> Row:
    import diffusers

    row = Row(label)
    dtype = torch.float16 if plan.device.type == "cuda" else torch.float32
    size = plan.sizes[family]
    clock = StepClock(plan.steps, plan.device)
    with torch_tf32_defaults(plan.device), recorded_failure(row):
        started = time.perf_counter()
        pipe = load_baseline(family, checkpoint, dtype).to(plan.device)
        pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        row.load_s = time.perf_counter() - started
        pipe.set_progress_bar_config(disable=True)
        row.applied = attention_name(pipe.unet)

        def on_step(p: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            clock.step_done(index)
            return tensors

        def make_image() -> list[str]:
            generator = torch.Generator("cpu").manual_seed(SEED)
            pipe(PROMPT, num_inference_steps=plan.steps, guidance_scale=plan.cfg, height=size, width=size,
                 generator=generator, callback_on_step_end=on_step)
            return []

        timed_images(row, plan, clock, make_image)
    pipe = None  # noqa: F841 - drop the weights before the engine loads its copy
    release_memory(plan.device)
    return row


def load_baseline(family: str, checkpoint: Path, dtype: torch.dtype) -> Any:
    """The plain diffusers pipeline from the single file, with the bundled config folder (offline)."""
    import diffusers

    config = family_config_dir(family)
    if family.startswith("sdxl"):
        return diffusers.StableDiffusionXLPipeline.from_single_file(
            str(checkpoint), config=str(config), local_files_only=True, torch_dtype=dtype)
    return diffusers.StableDiffusionPipeline.from_single_file(
        str(checkpoint), config=str(config), local_files_only=True, torch_dtype=dtype,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def attention_name(unet: Any) -> str:
    processors = {type(p).__name__ for p in unet.attn_processors.values()}
    return "sdpa" if processors == {"AttnProcessor2_0"} else "+".join(sorted(processors))


@contextmanager
def torch_tf32_defaults(device: torch.device) -> Iterator[None]:
    """Run the baseline with torch's own TF32 settings: the engine sets them process-wide when it loads."""
    if device.type != "cuda":
        yield
        return
    saved = tf32_state()
    set_tf32_state(TORCH_TF32_DEFAULTS)
    try:
        yield
    finally:
        set_tf32_state(saved)


def tf32_state() -> tuple[Any, Any]:
    """TF32 for matmuls and convolutions, through the same API the engine uses (mixing the two raises)."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        return torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def set_tf32_state(state: tuple[Any, Any]) -> None:
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = state
    else:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = state


TORCH_TF32_DEFAULTS = tf32_state()  # read at import, before the engine has set anything


# -- our engine ----------------------------------------------------------------------------------------------


def link_checkpoint(data_dir: Path, checkpoint: Path) -> None:
    """Put the cached checkpoint into the data dir's `models/Stable-diffusion` (a symlink: no copy of GiBs)."""
    folder = data_dir / "models" / "Stable-diffusion"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / checkpoint.name).symlink_to(checkpoint)


def measure_engine(plan: Plan, family: str, checkpoint: Path, switch: Switch, data_dir: Path) -> Row:
    from modules.engine.requests import Txt2ImgRequest
    from modules.services import build_services

    row = Row(switch.label)
    size = plan.sizes[family]
    clock = StepClock(plan.steps, plan.device)
    argv = ["--data-dir", str(data_dir), "--device", str(plan.device), "--no-hashing", *switch.flags]
    services = None
    with recorded_failure(row):
        services = build_services(argv, env={})
        memory = services.engine.memory
        settings = dict(switch.settings)
        if switch.key == "compile" and plan.compile_mode:
            settings["compile_mode"] = plan.compile_mode
        memory.reconfigure(memory.config.with_settings(**settings))  # applied when the checkpoint loads
        register_timed_job(services, clock)

        started = time.perf_counter()
        model = services.engine.checkpoints.get(checkpoint.stem)  # what a job's first step does; timed apart
        if plan.device.type == "cuda":
            torch.cuda.synchronize(plan.device)
        row.load_s = time.perf_counter() - started
        record = memory.record_for(model.pipe)
        row.applied = describe_record(record)
        row.notes += list(record.notes) if record else []
        model.pipe.set_progress_bar_config(disable=True)  # as for the baseline: no console bars in the table
        model = None

        request = Txt2ImgRequest(prompt=PROMPT, seed=SEED, sampler_name=SAMPLER, steps=plan.steps,
                                 cfg_scale=plan.cfg, width=size, height=size, batch_size=1, n_iter=1,
                                 checkpoint=checkpoint.stem, do_not_save_samples=True, do_not_save_grid=True)
        services.jobs.start()
        timed_images(row, plan, clock, lambda: run_job(services, request))
    if services is not None:
        services.jobs.stop()
        services.engine.checkpoints.unload()
    services = None
    release_memory(plan.device)
    return row


def register_timed_job(services: Any, clock: StepClock) -> None:
    """A job type that is the engine's txt2img with a context that timestamps the per-step progress reports.

    The engine reports progress from its `callback_on_step_end` ("step i/N"), so the timestamps sit where the
    baseline's callback puts them. The job goes through the same queue, hooks and engine code as "txt2img".
    """
    from modules.engine.requests import Txt2ImgRequest
    from modules.jobs import JobContext, JobType

    class TimedContext(JobContext):
        def progress(self, step: int, total: int, preview: Any = None, text: str | None = None) -> None:
            super().progress(step, total, preview=preview, text=text)
            first_pass_step = FIRST_PASS_STEP.fullmatch(text or "")
            if first_pass_step:
                clock.step_done(int(first_pass_step.group(1)) - 1)

    def run(request: Any, ctx: JobContext) -> Any:
        return services.engine.txt2img(request, TimedContext(ctx.job))

    services.jobs.register(JobType(BENCH_JOB, Txt2ImgRequest, run, owner="bench"))


def run_job(services: Any, request: Any) -> list[str]:
    """Submit one job, wait for it, and return its notes; a failed job raises with the job's error."""
    job = services.jobs.submit(BENCH_JOB, request)
    job.wait()
    if job.state.value != "done":
        raise RuntimeError(f"job {job.state.value}: {job.error}")
    return list(job.notes)


def describe_record(record: Any) -> str:
    """What the memory manager applied, from its `PreparedRecord`: the proof that a switch took effect."""
    if record is None:
        return "?"
    parts = [record.attention]
    if record.channels_last:
        parts.append("channels_last")
    if record.offload != "none":
        parts.append(f"offload={record.offload}")
    if record.compiled:
        parts.append(f"compile={record.compiled}")
    if record.tf32 is not None:
        parts.append(f"tf32={'on' if record.tf32 else 'off'}")
    if record.vae_dtype != record.dtype:
        parts.append(f"vae {record.vae_dtype}")
    return ",".join(parts)


# -- output --------------------------------------------------------------------------------------------------


def progress(family: str, row: Row) -> Row:
    """One line as each configuration finishes, so a long run (compile, SDXL) shows where it is."""
    its = row.its_median
    result = f"FAILED ({row.error})" if row.error else f"{its:.3f} it/s" if its is not None else "-"
    print(f"  done: {family} / {row.label}: {result}", flush=True)
    return row


def print_table(plan: Plan, family: str, checkpoint: Path, rows: list[Row], load: tuple[float, float]) -> None:
    counts = parameter_counts(checkpoint)
    size = plan.sizes[family]
    print(f"== {FAMILY_NAMES[family]} ({family}): random weights at full size, UNet {counts['unet'] / 1e6:.0f} M, "
          f"VAE {counts['vae'] / 1e6:.0f} M, text {counts['text'] / 1e6:.0f} M parameters")
    print(f"   {size}x{size}, {plan.steps} steps, {SAMPLER}, CFG {plan.cfg:g}, batch 1; median of {plan.runs} timed "
          f"runs after 1 warm-up{'  [REDUCED]' if plan.reduced else ''}")
    busy = max(load) > (os.cpu_count() or 1) * 0.75
    print(f"   system load average (1 min) before/after: {load[0]:.1f}/{load[1]:.1f} on {os.cpu_count()} cores"
          + ("  [BUSY: other processes competed for the CPU; expect noise]" if busy else ""))
    cuda = plan.device.type == "cuda"
    headers = ["configuration", "it/s", "spread", "s/image", *(["peak VRAM"] if cuda else []), "peak RSS",
               "vs diffusers", "load s", "warm-up s", "applied"]
    baseline = rows[0].its_median
    table = [headers]
    for row in rows:
        table.append(table_cells(row, baseline, cuda))
    widths = [max(len(line[i]) for line in table if i < len(line)) for i in range(len(headers))]
    for index, line in enumerate(table):
        print("   " + "  ".join(cell.ljust(widths[i]) if i in (0, len(line) - 1) else cell.rjust(widths[i])
                                for i, cell in enumerate(line)).rstrip())
        if index == 0:
            print("   " + "  ".join("-" * w for w in widths))
    print_notes(rows)
    if cuda:
        print(f"   published anchors, for context: {ANCHORS[family]}")
        if plan.reduced:
            print("   (this run is not at the anchors' size/steps)")
    print()


def table_cells(row: Row, baseline: float | None, cuda: bool) -> list[str]:
    if row.error:
        return [row.label, "failed", *["-"] * (7 if cuda else 6), "(error below)"]
    its = row.its_median
    ratio = f"{its / baseline:.2f}x" if its and baseline else "-"
    seconds = statistics.median(row.seconds) if row.seconds else None
    return [
        row.label,
        f"{its:.3f}" if its is not None and its < 10 else f"{its:.1f}" if its is not None else "-",
        f"{(max(row.its) - min(row.its)) / its:.0%}" if its and len(row.its) > 1 else "-",
        f"{seconds:.2f}" if seconds is not None else "-",
        *([format_gib(row.cuda_peak)] if cuda else []),
        format_gib(row.rss_peak),
        ratio,
        f"{row.load_s:.1f}" if row.load_s is not None else "-",
        f"{row.warmup_s:.1f}" if row.warmup_s is not None else "-",
        row.applied,
    ]


def print_notes(rows: list[Row]) -> None:
    for row in rows:
        if row.error:
            print(f"   FAILED [{row.label}]: {row.error}")
        for note in dict.fromkeys(row.notes):  # unique, in order
            print(f"   note [{row.label}]: {note}")


if __name__ == "__main__":
    main()
