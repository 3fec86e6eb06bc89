"""Flags as an A1111 user types them: names, COMMANDLINE_ARGS, typos, and flags that extensions add."""

from __future__ import annotations

import pytest

from modules import cli


def parse(*argv: str, env: dict[str, str] | None = None, extra=()):
    return cli.parse_strict(list(argv), env or {}, extra)


def test_defaults_match_a1111() -> None:
    args = parse()
    assert args.port == 7860
    assert not args.listen and not args.api and not args.nowebui
    assert args.device == "auto" and args.precision == "auto"


def test_nowebui_moves_the_default_port_like_a1111() -> None:
    assert parse("--nowebui").port == 7861
    assert parse("--nowebui", "--port", "9000").port == 9000


def test_commandline_args_env_is_appended() -> None:
    args = parse("--port", "7000", env={"COMMANDLINE_ARGS": "--listen --api --gradio-auth 'me:pa ss'"})
    assert args.listen and args.api and args.port == 7000
    assert args.gradio_auth == "me:pa ss"


def test_unknown_flag_is_refused_with_the_valid_list_and_a_hint() -> None:
    with pytest.raises(cli.CliError) as e:
        parse("--lisen")
    message = str(e.value)
    assert "unknown flag --lisen" in message
    assert "did you mean --listen?" in message
    assert "--enable-insecure-extension-access" in message  # the valid list is there


def test_underscored_flag_names_are_accepted() -> None:
    # A1111 #8593: users type the flag with underscores and it silently does nothing there.
    assert parse("--enable_insecure_extension_access").enable_insecure_extension_access


def test_a1111_flags_without_effect_are_accepted_and_reported() -> None:
    args = parse("--skip-torch-cuda-test", "--theme", "dark", "--xformers")
    assert args.ignored_flags == ["--skip-torch-cuda-test", "--theme"]
    assert args.xformers


@pytest.mark.parametrize("value, expected", [("cpu", "cpu"), ("cuda", "cuda"), ("cuda:1", "cuda:1"), ("mps", "mps")])
def test_device_values(value: str, expected: str) -> None:
    assert parse("--device", value).device == expected


def test_bad_device_and_precision_say_what_is_valid() -> None:
    with pytest.raises(cli.CliError, match="use auto, cpu, cuda, cuda:N or mps"):
        parse("--device", "gpu0")
    with pytest.raises(cli.CliError, match="fp32, fp16 or bf16"):
        parse("--precision", "fp8")


def test_precision_aliases_and_no_half() -> None:
    assert parse("--precision", "full").precision == "fp32"
    assert parse("--no-half").precision == "fp32"


def test_tls_files_must_come_together() -> None:
    with pytest.raises(cli.CliError, match="together"):
        parse("--tls-keyfile", "k.pem")


def test_extension_flags_parse_and_collisions_are_reported_not_fatal() -> None:
    ok = cli.ExtraFlag(("--hello-loud",), {"action": "store_true"}, owner="hello")
    clash = cli.ExtraFlag(("--listen",), {"action": "store_true"}, owner="bad")
    args = parse("--hello-loud", extra=[ok, clash])
    assert args.hello_loud is True
    assert clash.notes and "bad" in clash.notes[0]


def test_lenient_pass_ignores_extension_flags() -> None:
    args = cli.parse_lenient(["--hello-loud", "--data-dir", "/x"], {})
    assert args.data_dir == "/x"


def test_secrets_are_masked_in_public_flags() -> None:
    shown = cli.public_flags(parse("--gradio-auth", "a:secret", "--api-auth", "b:secret2"))
    assert shown["gradio_auth"] == "***" and shown["api_auth"] == "***"
    assert "secret" not in repr(shown)
