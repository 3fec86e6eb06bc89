"""Command-line flags, with A1111's names and meanings.

Flags come from argv plus the `COMMANDLINE_ARGS` environment variable (appended, as A1111 does). Extensions add
their own flags, so parsing runs twice: a lenient pass that only needs to know where the data lives and whether
extensions are on, then a strict pass once every extension flag is known.
"""

from __future__ import annotations

import argparse
import difflib
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PORT = 7860
DEFAULT_API_ONLY_PORT = 7861

# Flags that hold secrets; they are masked wherever flags are shown (/cmd-flags, logs, error pages).
SECRET_FLAGS = ("gradio_auth", "api_auth")

# A1111 flags that mean nothing here. Users paste their COMMANDLINE_ARGS from A1111; refusing these would only
# be noise, so they are accepted with a note saying why they do nothing. Value: whether the flag takes a value.
A1111_FLAGS_WITHOUT_EFFECT: dict[str, bool] = {
    "--skip-torch-cuda-test": False,
    "--skip-python-version-check": False,
    "--skip-version-check": False,
    "--reinstall-torch": False,
    "--reinstall-xformers": False,
    "--update-all-extensions": False,
    "--update-check": False,
    "--log-startup": False,
    "--upcast-sampling": False,
    "--opt-split-attention": False,
    "--opt-split-attention-v1": False,
    "--opt-sub-quad-attention": False,
    "--opt-sdp-no-mem-attention": False,
    "--disable-opt-split-attention": False,
    "--opt-channelslast": False,
    "--no-download-sd-model": False,
    "--disable-safe-unpickle": False,
    "--theme": True,
}


class CliError(Exception):
    """A flag problem, with a message meant for the person who typed the command."""


@dataclass(frozen=True)
class ExtraFlag:
    """A flag added by an extension: argparse arguments plus the extension that owns it."""

    names: tuple[str, ...]
    options: Mapping[str, Any]
    owner: str
    notes: list[str] = field(default_factory=list)


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, and lists the valid flags for an unknown one."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CliError(message)

    def valid_flags(self) -> list[str]:
        return sorted(s for a in self._actions for s in a.option_strings if s.startswith("--"))


def _device(value: str) -> str:
    if re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        return value
    raise argparse.ArgumentTypeError(f"'{value}' is not a device; use auto, cpu, cuda, cuda:N or mps")


_PRECISION_ALIASES = {"full": "fp32", "half": "fp16", "autocast": "auto"}


def _precision(value: str) -> str:
    value = _PRECISION_ALIASES.get(value, value)
    if value in ("auto", "fp32", "fp16", "bf16"):
        return value
    raise argparse.ArgumentTypeError(f"'{value}' is not a precision; use auto, fp32, fp16 or bf16")


def _add_core_flags(p: _Parser) -> None:
    net = p.add_argument_group("network")
    net.add_argument("--listen", action="store_true", help="serve on 0.0.0.0 so other machines on the LAN can connect")
    net.add_argument("--port", type=int, default=None, help=f"port (default {DEFAULT_PORT}, {DEFAULT_API_ONLY_PORT} with --nowebui)")
    net.add_argument("--server-name", default=None, help="host name or address to bind to")
    net.add_argument("--share", action="store_true", help="open a public Gradio share link (implies LAN rules)")
    net.add_argument("--tls-keyfile", default=None, help="TLS private key file for HTTPS")
    net.add_argument("--tls-certfile", default=None, help="TLS certificate file for HTTPS")
    net.add_argument("--cors-allow-origins", default=None, help="comma-separated origins allowed to call the app cross-site")
    net.add_argument("--cors-allow-origins-regex", default=None, help="regex of origins allowed to call the app cross-site")
    net.add_argument("--autolaunch", action="store_true", help="open the UI in the default browser once it is up")

    auth = p.add_argument_group("auth")
    auth.add_argument("--gradio-auth", default=None, help="UI logins as user:pass[,user2:pass2]")
    auth.add_argument("--gradio-auth-path", default=None, help="file with UI logins, one user:pass per line or comma-separated")
    auth.add_argument("--api-auth", default=None, help="HTTP Basic logins for every REST route, user:pass[,...]")

    mode = p.add_argument_group("mode")
    mode.add_argument("--api", action="store_true", help="serve the A1111 REST API (/sdapi/v1) beside the UI")
    mode.add_argument("--nowebui", action="store_true", help="serve the REST API only, no UI")

    paths = p.add_argument_group("paths")
    paths.add_argument("--data-dir", default=None, help="where models, outputs, settings and user extensions live")
    paths.add_argument("--models-dir", default=None, help="models folder (default <data-dir>/models)")
    paths.add_argument("--ckpt", default=None, help="checkpoint to load at start")
    paths.add_argument("--ckpt-dir", default=None, help="folder of Stable Diffusion checkpoints")
    paths.add_argument("--vae-dir", default=None, help="folder of VAE files")
    paths.add_argument("--lora-dir", default=None, help="folder of LoRA files")
    paths.add_argument("--embeddings-dir", default=None, help="folder of textual-inversion embeddings")
    paths.add_argument("--outputs-dir", default=None, help="where images and videos are saved (default <data-dir>/outputs)")

    farm = p.add_argument_group("cluster")
    farm.add_argument("--cluster", default=None, metavar="ADDRESS",
                      help="run jobs on a Ray cluster: auto (RAY_ADDRESS or the head on this machine), host:6379, "
                           "or ray://host:10001; see README 'Cluster'")
    farm.add_argument("--cluster-cpu-workers", type=int, default=0, metavar="N",
                      help="workers on each cluster node that has no GPU (default 0: only GPUs take jobs)")

    ext = p.add_argument_group("extensions")
    ext.add_argument("--enable-insecure-extension-access", action="store_true",
                     help="allow installing and changing extensions even when the app is shared on the network")
    ext.add_argument("--disable-all-extensions", action="store_true", help="start with every extension off (safe mode)")

    inst = p.add_argument_group("install")
    inst.add_argument("--skip-install", action="store_true", help="do not check or install requirements at launch")

    dev = p.add_argument_group("device")
    dev.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda, cuda:N or mps")
    dev.add_argument("--precision", type=_precision, default="auto", help="auto, fp32, fp16 or bf16")
    dev.add_argument("--medvram", action="store_true", help="keep only the active model part on the GPU (CPU offload)")
    dev.add_argument("--lowvram", action="store_true", help="offload layer by layer (slowest, least VRAM)")
    dev.add_argument("--no-half-vae", action="store_true", help="run the VAE in fp32")
    dev.add_argument("--xformers", action="store_true", help="use xformers attention when it is installed")
    dev.add_argument("--opt-sdp-attention", action="store_true", help="use PyTorch SDPA attention (the default)")
    dev.add_argument("--no-half", action="store_true", help="A1111 name for --precision fp32")
    dev.add_argument("--no-hashing", action="store_true", help="do not compute model file hashes")

    for flag, takes_value in A1111_FLAGS_WITHOUT_EFFECT.items():
        p.add_argument(flag, nargs=1 if takes_value else 0, default=None, action=_Ignored, help=argparse.SUPPRESS)


class _Ignored(argparse.Action):
    """Records an A1111 flag that has no effect here, so the app can say so once at start."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        ignored = list(getattr(namespace, "ignored_flags", None) or [])
        ignored.append(option_string)
        namespace.ignored_flags = ignored


def build_parser(extra_flags: Sequence[ExtraFlag] = ()) -> _Parser:
    p = _Parser(prog="launch.py", description="SD Studio", allow_abbrev=False, add_help=True)
    _add_core_flags(p)
    p.set_defaults(ignored_flags=[])
    for flag in extra_flags:
        group = p.add_argument_group(f"extension {flag.owner}")
        try:
            group.add_argument(*flag.names, **dict(flag.options))
        except (argparse.ArgumentError, TypeError, ValueError) as e:
            flag.notes.append(f"flag {'/'.join(flag.names)} from extension {flag.owner} was not added: {e}")
    return p


def full_argv(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """argv plus COMMANDLINE_ARGS, with A1111-style underscores in flag names turned into dashes."""
    args = list(argv) + shlex.split(env.get("COMMANDLINE_ARGS", ""))
    return [_dashes(a) for a in args]


def _dashes(arg: str) -> str:
    # "--enable_insecure_extension_access" is a common typo (A1111 #8593); the value part is left alone.
    if not arg.startswith("--"):
        return arg
    name, sep, value = arg.partition("=")
    return name.replace("_", "-") + sep + value


def parse_lenient(argv: Sequence[str], env: Mapping[str, str]) -> argparse.Namespace:
    """First pass: core flags only, unknown ones left for the strict pass."""
    parser = build_parser()
    try:
        args, _unknown = parser.parse_known_args(full_argv(argv, env))
    except CliError:
        # A malformed core flag is reported by the strict pass, with the full list of flags.
        args, _unknown = build_parser().parse_known_args([])
    return args


def parse_strict(argv: Sequence[str], env: Mapping[str, str], extra_flags: Sequence[ExtraFlag] = (),
                 unknown_out: list[str] | None = None) -> argparse.Namespace:
    """Second pass: every flag must be known, or the error lists the valid ones. With `unknown_out`, the
    arguments the app does not know are put there instead (a `launch.py <command>` parses them itself)."""
    parser = build_parser(extra_flags)
    args_list = full_argv(argv, env)
    try:
        args, unknown = parser.parse_known_args(args_list)
    except CliError as e:
        raise CliError(f"{e}\nRun `python launch.py --help` for every flag.") from None
    if unknown and unknown_out is not None:
        unknown_out.extend(unknown)
    elif unknown:
        raise CliError(_unknown_message(unknown, parser.valid_flags()))
    if args.port is None:
        args.port = DEFAULT_API_ONLY_PORT if args.nowebui else DEFAULT_PORT
    if args.no_half:
        args.precision = "fp32"
    if not 0 < args.port < 65536:
        raise CliError(f"--port {args.port} is not a TCP port (1-65535)")
    if args.cluster_cpu_workers < 0:
        raise CliError(f"--cluster-cpu-workers {args.cluster_cpu_workers} must be 0 or more")
    if bool(args.tls_keyfile) != bool(args.tls_certfile):
        raise CliError("--tls-keyfile and --tls-certfile must be given together")
    return args


def _unknown_message(unknown: list[str], valid: list[str]) -> str:
    lines = []
    for arg in unknown:
        if not arg.startswith("-"):
            # The value of a mistyped flag ("--apiauth bob:secret") may be a password: never echo values.
            lines.append(f"unexpected value ({len(arg)} characters, not shown): is the flag before it misspelt?")
            continue
        name = arg.split("=", 1)[0]
        hint = difflib.get_close_matches(name, valid, n=1)
        lines.append(f"unknown flag {name}" + (f" (did you mean {hint[0]}?)" if hint else ""))
    lines.append("Valid flags: " + " ".join(valid))
    return "\n".join(lines)


def public_flags(args: argparse.Namespace) -> dict[str, Any]:
    """Flags as shown to users and API clients, with secrets masked."""
    shown = dict(vars(args))
    for key in SECRET_FLAGS:
        if shown.get(key):
            shown[key] = "***"
    return shown
