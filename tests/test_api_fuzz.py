"""schemathesis (the OpenAPI fuzzer vLLM runs in its CI) over the app in-process, with tiny models as the
server's defaults: bodies generated from /openapi.json, valid and invalid. No 5xx on any route, every error
in OpenAI's shape, every answer as /openapi.json describes it.

The description's limits are narrowed for the run (image sizes, steps, counts, tokens), so that a valid
case costs a tiny model a fraction of a second: the fuzzer still reaches every field and every check; the
full ranges are tested by tests/test_protocol.py.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

EXAMPLES = {"positive": 6, "negative": 20}
"""Cases per route and mode: valid bodies run tiny models (most of the time this test takes); invalid ones
are refused before any model loads."""

NARROWED = {
    "n": 2,
    "max_tokens": 8,
    "max_completion_tokens": 8,
    "width": 64,
    "height": 64,
    "steps": 3,
    "num_inference_steps": 3,
    "count": 2,
}


def _narrow(spec: dict) -> None:
    """Narrow the request bodies' maxima in place (see the module's docstring)."""
    for item in spec["paths"].values():
        for operation in item.values():
            body = operation.get("requestBody")
            if body is None:
                continue
            (schema,) = (content["schema"] for content in body["content"].values())  # JSON, or a form
            for name, field in schema["properties"].items():
                if name in NARROWED:
                    field["maximum"] = NARROWED[name]
            if "size" in schema["properties"]:
                schema["properties"]["size"]["pattern"] = r"^(auto|(8|16|32|64)x(8|16|32|64))$"
            for text in ("input", "prompt"):
                if text in schema["properties"] and schema["properties"][text].get("type") == "string":
                    schema["properties"][text]["maxLength"] = 40
            for text in ("system", "negative_prompt", "negative"):
                if text in schema["properties"]:
                    schema["properties"][text]["maxLength"] = 40
            for name in ("model", "lora", "vae"):  # names of models: the server's tiny defaults run
                schema["properties"].pop(name, None)
            if "device" in schema["properties"]:  # there is no GPU here: cuda is refused, rightly
                schema["properties"]["device"] = {"enum": ["auto", "cpu", None]}
            if "voice" in schema["properties"]:
                schema["properties"]["voice"] = {"enum": ["alloy", "nova", None]}


def test_every_route_survives_the_fuzzer(tiny, pipes, vits, monkeypatch):
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    from aigc_cli.console import LogConsole
    from aigc_cli.server.app import create_app
    from aigc_cli.server.state import ServerState

    monkeypatch.setenv("AIGC_TEXT_MODEL", str(tiny["llama"]))
    monkeypatch.setenv("AIGC_IMAGE_MODEL", str(pipes["sd"]))
    monkeypatch.setenv("AIGC_SPEECH_MODEL", str(vits))
    app = create_app(ServerState(None, [], LogConsole(verbose=False)))
    _narrow(app.openapi())  # the app serves the cached description: narrowed
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    checks = [
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
        content_type_conformance,
    ]
    calls: dict[str, int] = {}

    def fuzz(operation, mode) -> None:
        label = f"{operation.label} {mode.value}"

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES[mode.value],
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def call(case) -> None:
            response = case.call(timeout=120)  # a loaded machine (tests in parallel) is slow, not wrong
            key = f"{label} {response.status_code}"
            calls[key] = calls.get(key, 0) + 1
            case.validate_response(response, checks=checks)

        try:
            call()
        except Unsatisfiable:  # no invalid input exists for a route without parameters (GET /health)
            assert mode is GenerationMode.NEGATIVE, label

    for result in schema.get_all_operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(result.ok(), mode)
    print(f"schemathesis: {sum(calls.values())} calls", calls)
    for result in schema.get_all_operations():  # valid bodies were answered, not only refused
        label = result.ok().label
        # made-up ids are 404 in OpenAI's shape; the fuzzer's images for edits are 1x1 at most (a 400 naming
        # `image`): valid edits are tests/test_openai_conformance.py's, equal to the CLI's pixels
        # png-info's strings are never an image either: tests/test_a1111.py reads real PNGs back; nor are
        # describe's (tests/test_web_page.py reads real files back); made-up log ids are 404 too
        if label not in (
            "GET /v1/models/{model_id}",
            "POST /v1/images/edits",
            "POST /sdapi/v1/png-info",
            "POST /api/describe",
            "GET /api/logs/{log_id}",
        ):
            assert calls.get(f"{label} positive 200", 0) >= 1, calls
