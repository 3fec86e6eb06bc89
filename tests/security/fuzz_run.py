"""Running schemathesis against a live server and reducing its event stream to what the fuzz test asserts.

Schemathesis' own engine runs (the same as `st run`): the examples, coverage and fuzzing phases over every
operation in `/openapi.json`, with its conformance checks (status codes documented, bodies match the schema,
content types, headers, negative data rejected). Two checks are replaced or dropped, for stated reasons:

* `not_a_server_error` is done here instead: every 5xx is a failure, except a 501 whose body is the app's
  `NotImplemented` error, the deliberate A1111-compatible answer for features that have not landed yet (the
  route exists so A1111 clients get a clear message, not a 404).
* `positive_data_acceptance` is off: the schema cannot say which sampler, checkpoint or style names exist, or
  what the size limit is, so schema-valid requests are rightly refused with a 400 that names the field.

Requests are steered with schemathesis dictionaries (real sampler names, small sizes, a tiny PNG for image
fields) so that a good share of generation requests get past validation and run real jobs on the tiny model.
"""

from __future__ import annotations

import base64
import collections
import io
import json
from dataclasses import dataclass, field
from typing import Any

import schemathesis
from PIL import Image
from schemathesis.engine import events

# 501 bodies with this `error` are the app's deliberate "not available yet" answer (modules.api.sdapi.errors).
NOT_IMPLEMENTED = "NotImplemented"


@dataclass
class FuzzReport:
    """What one schemathesis run did: cases sent, answers by status, and everything that went wrong."""

    cases: int = 0
    by_phase: collections.Counter[str] = field(default_factory=collections.Counter)
    statuses: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    slowest: tuple[float, str] = (0.0, "")

    def ok_count(self, operation: str) -> int:
        return sum(n for (label, status), n in self.statuses.items() if label == operation and status < 300)


def tiny_png_b64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 40, 40)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def steering(samplers: list[str], upscalers: list[str], checkpoint: str) -> dict[str, Any]:
    """Schemathesis dictionaries and the body fields they feed, each used for 80% of generated values.

    They only go so far: generation bodies have some sixty fields, most of which a random value makes invalid,
    so the schema fuzz rarely runs a job; `fuzz_bodies` covers that.
    """
    png = tiny_png_b64()
    dictionaries = {
        "sides": {"values": [8, 16, 32, 48, 64]},
        "steps": {"values": [1, 2, 3]},
        "samplers": {"values": samplers},
        "upscalers": {"values": upscalers},
        "checkpoints": {"values": [checkpoint]},
        "images": {"values": [png, f"data:image/png;base64,{png}"]},
        "prompts": {"values": ["a cat", "(red:1.3) [cat:dog:0.5] [a|b] BREAK sky", "<lora:missing:0.8> a",
                               "((((((((((deep))))))))))", "[[[x]]] \\(escaped\\) :3", "emoji 🐱 " * 40]},
        "job_types": {"values": ["txt2img", "img2img", "extras"]},
    }
    bound = {
        "sides": ["width", "height", "request.width", "request.height", "hr_resize_x", "hr_resize_y"],
        "steps": ["steps", "request.steps", "hr_second_pass_steps"],
        "samplers": ["sampler_name", "sampler_index", "hr_sampler_name", "request.sampler_name"],
        "upscalers": ["hr_upscaler", "upscaler_1", "upscaler_2"],
        "checkpoints": ["hr_checkpoint_name"],
        "images": ["image", "init_images[*]", "mask", "imageList[*].data", "controlnet_input_images[*]",
                   "controlnet_images[*]", "request.init_images[*]"],
        "prompts": ["prompt", "negative_prompt", "hr_prompt", "request.prompt"],
        "job_types": ["type"],
    }
    parameters = {f"body.{path}": {"dictionary": name, "probability": 0.8}
                  for name, paths in bound.items() for path in paths}
    return {"dictionaries": dictionaries, "parameters": parameters}


def config(max_examples: int, seed: int, timeout_s: float, steer: dict[str, Any]) -> dict[str, Any]:
    """A deterministic run: fixed seed, derandomized generation, no example database, one worker."""
    return {
        "seed": seed,
        "workers": 1,
        "request-timeout": timeout_s,
        "continue-on-failure": True,
        "generation": {"max-examples": max_examples, "deterministic": True, "mode": "all", "database": "none"},
        # Stateful testing needs links between operations; our schema declares none, and inferring them
        # mostly re-sends what the other phases already sent.
        "phases": {"stateful": {"enabled": False}},
        "checks": {"not_a_server_error": {"enabled": False}, "positive_data_acceptance": {"enabled": False}},
        # DELETE /studio/v1/extensions/{extension_id} also matches the URL /studio/v1/extensions/install, so a
        # 405 there truthfully allows "DELETE, POST"; the schema, path template by path template, expects POST.
        "operations": [{"include-path": "/studio/v1/extensions/install",
                        "checks": {"allow_header_conformance": {"enabled": False}}}],
        **steer,
    }


def run(base_url: str, settings: dict[str, Any]) -> FuzzReport:
    """Fuzz every operation of the server at `base_url` and report; never raises for what it finds."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json",
                                           config=schemathesis.Config.from_dict(settings))
    report = FuzzReport()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            _scenario(report, event)
        elif isinstance(event, events.NonFatalError):
            report.failures.append(f"{event.label}: {type(event.value).__name__}: {event.value}")
        elif isinstance(event, events.FatalError):
            report.failures.append(f"fatal: {type(event.exception).__name__}: {event.exception}")
    return report


def _scenario(report: FuzzReport, event: events.ScenarioFinished) -> None:
    recorder = event.recorder
    for case_id, interaction in recorder.interactions.items():
        report.cases += 1
        report.by_phase[event.phase.name.lower()] += 1
        response = interaction.response
        if response is None:
            report.failures.append(f"{event.label}: no response (case {case_id})")
            continue
        report.statuses[(event.label, response.status_code)] += 1
        report.slowest = max(report.slowest, (response.elapsed, event.label))
        if response.status_code >= 500 and not _deliberate_501(response.status_code, response.content):
            report.failures.append(f"{event.label}: {response.status_code} {response.content[:300]!r}\n"
                                   f"  {_curl(recorder, case_id)}")
    for case_id, checks in recorder.checks.items():
        for check in checks:
            if check.status.name == "FAILURE" and check.failure_info is not None:
                text = str(check.failure_info.failure).strip()[:600]
                report.failures.append(f"{event.label}: {check.name}: {text}\n  {_curl(recorder, case_id)}")


def _deliberate_501(status: int, content: bytes | None) -> bool:
    if status != 501:
        return False
    try:
        return json.loads(content or b"{}").get("error") == NOT_IMPLEMENTED
    except (ValueError, AttributeError):
        return False


def _curl(recorder: Any, case_id: str) -> str:
    node = recorder.cases.get(case_id)
    try:
        return node.value.as_curl_command()[:500] if node is not None else ""
    except Exception:  # noqa: BLE001 - only a hint for the failure message
        return ""
