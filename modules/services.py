"""The one container of app state, built in order and handed to the API and the UI. No globals.

Start-up order matters: the lenient flag pass finds the data dir; settings load; extensions are found and
registered (which is when they declare flags); then the strict flag pass runs with every flag known, and the
extensions' other contributions are applied.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from modules import auth, cli, crash_recovery
from modules import paths as paths_mod
from modules.access import AccessPolicy
from modules.downloads import Catalogue, DownloadManager
from modules.engine.engine import Engine
from modules.engine.extras import ExtrasRequest
from modules.engine.postprocess import extra_model_kinds
from modules.engine.requests import Img2ImgBatchRequest, Img2ImgRequest, Txt2ImgRequest
from modules.extensions.api import ExtensionAPI
from modules.extensions.hooks import HookRegistry
from modules.extensions.install import ExtensionInstaller
from modules.extensions.loader import ExtensionRecord, discover, load_all
from modules.extensions.manager import ExtensionManager
from modules.extensions.registry import ExtensionRegistry
from modules.extensions.studio import Studio
from modules.jobs import Executor, JobQueue, JobType
from modules.model_registry import HashCache, ModelRegistry, core_kinds
from modules.paths import DataPaths
from modules.settings import Settings
from modules.settings.core import core_sections

log = logging.getLogger(__name__)


@dataclass
class Services:
    args: argparse.Namespace
    paths: DataPaths
    settings: Settings
    models: ModelRegistry
    hooks: HookRegistry
    extensions: ExtensionRegistry
    extension_manager: ExtensionManager
    jobs: JobQueue
    engine: Engine
    downloads: DownloadManager
    download_jobs: JobQueue  # its own worker: a 4 GB download must not hold up generation
    access: AccessPolicy
    ui_logins: auth.Credentials
    api_logins: auth.Credentials
    notices: list[str] = field(default_factory=list)
    recovery: crash_recovery.Recovery | None = None  # holds the data-folder lease for the life of the process

    @property
    def api_enabled(self) -> bool:
        return bool(self.args.api or self.args.nowebui)


def build_services(argv: Sequence[str], env: Mapping[str, str], unknown_out: list[str] | None = None) -> Services:
    """Parse flags, load settings and extensions. Raises cli.CliError for a bad command line, unless
    `unknown_out` is given: then arguments the app does not know go there (a command's own arguments)."""
    early = cli.parse_lenient(argv, env)
    paths = paths_mod.from_args(early)
    paths.ensure()
    # Before anything writes into outputs/ or queues a job: clear what a crash left, find the jobs it lost.
    recovery = crash_recovery.recover(paths.cache, paths.outputs)

    settings = Settings(paths.config_file, core_sections())
    settings.load()
    hooks = HookRegistry(timeout_s=lambda: float(settings.get("extension_hook_timeout")))
    models = ModelRegistry(hash_cache=HashCache(paths.cache / "hashes.json"), hashing_enabled=not early.no_hashing)
    for kind in [*core_kinds(paths), *extra_model_kinds(paths)]:
        models.add_kind(kind)

    records = discover([paths_mod.BUILTIN_EXTENSIONS_DIR, paths.extensions], paths_mod.is_builtin_extension)

    def make_api(record: ExtensionRecord) -> ExtensionAPI:
        return ExtensionAPI(record.id, record.folder, settings.get, paths.model_folder)

    load_all(records, settings.get("disabled_extensions"), early.disable_all_extensions, make_api)
    extensions = ExtensionRegistry(records, hooks)

    args = cli.parse_strict(argv, env, extensions.extra_flags(), unknown_out)
    extensions.bind_flags(args)
    extensions.apply_settings(settings)
    extensions.apply_model_kinds(models, paths.model_folder)
    extensions.apply_hooks()
    extensions.apply_scripts()
    jobs = JobQueue(hooks, retention_s=lambda: 60.0 * settings.get("job_retention_minutes"),
                    executor=_cluster_executor(args, settings, paths, hooks), on_change=recovery.journal.update)
    engine = Engine(args, models, paths.outputs, paths.cache, paths.styles_file, settings.get, hooks)
    jobs.register(JobType("txt2img", Txt2ImgRequest, engine.txt2img, remote=_anywhere))
    access = AccessPolicy.from_args(args)
    # Folder jobs check the LAN rule themselves too: /studio/v1/jobs can submit them without the UI or /sdapi.
    jobs.register(JobType("img2img", Img2ImgRequest, engine.img2img, remote=_anywhere))
    jobs.register(JobType("img2img-batch", Img2ImgBatchRequest,
                          lambda request, ctx: engine.img2img_batch(request, ctx, access)))
    # A folder on the server exists only here; images sent with the request can go to any worker.
    jobs.register(JobType("extras", ExtrasRequest, lambda request, ctx: engine.extras(request, ctx, access),
                          remote=lambda request: not request.input_dir.strip()))
    extensions.apply_job_types(jobs)
    downloads = DownloadManager(paths.model_folder, paths.tmp, Catalogue.with_defaults())
    download_jobs = JobQueue(HookRegistry(), retention_s=lambda: 60.0 * settings.get("job_retention_minutes"))
    downloads.register_job_type(download_jobs)
    extensions.apply_downloads(downloads.catalogue)

    ui_logins, api_logins = auth.from_args(args)
    installer = ExtensionInstaller(paths.extensions, paths.tmp)
    services = Services(
        args=args, paths=paths, settings=settings, models=models, hooks=hooks, extensions=extensions,
        extension_manager=ExtensionManager(extensions, settings, access, installer), jobs=jobs, engine=engine, downloads=downloads,
        download_jobs=download_jobs, access=access,
        ui_logins=ui_logins, api_logins=api_logins, recovery=recovery,
    )
    extensions.bind_studio(Studio(services))
    services.notices.extend(recovery.notices)
    services.notices.extend(_start_notices(services))
    return services


def _anywhere(_request: object) -> bool:
    return True


def _cluster_executor(args: argparse.Namespace, settings: Settings, paths: DataPaths,
                      hooks: HookRegistry) -> Executor | None:
    """With --cluster, jobs run on a Ray cluster's workers; without it, Ray is never imported."""
    if not args.cluster:
        return None
    from modules.cluster.node import use_cluster_token

    use_cluster_token(os.environ)
    from modules.cluster.executor import ClusterExecutor

    executor = ClusterExecutor(args.cluster, args.cluster_cpu_workers, settings, paths.outputs, hooks)
    try:
        executor.connect()
    except Exception as e:  # noqa: BLE001 - Ray raises many kinds; each means "not reachable" to the user
        raise cli.CliError(f"--cluster {args.cluster}: could not join the Ray cluster: {e}") from None
    return executor


def _start_notices(services: Services) -> list[str]:
    """Things the user should see on the first screen and in the console, not only in a log file."""
    notices = list(services.settings.warnings)
    failed = [r.name for r in services.extensions.records if r.state == "failed"]
    if failed:
        notices.append(f"Extensions that failed to load: {', '.join(failed)}. See the Extensions tab.")
    if services.args.ignored_flags:
        notices.append("These A1111 flags have no effect in SD Studio and were ignored: "
                       + " ".join(services.args.ignored_flags))
    if services.access.shared_on_network and not services.access.extension_management_allowed:
        notices.append("Shared on the network: extension management is off "
                       "(--enable-insecure-extension-access turns it on).")
    for notice in notices:
        log.warning(notice)
    return notices
