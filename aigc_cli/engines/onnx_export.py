"""The text backend choice, and the one-time ONNX export of a model for onnxruntime-genai.

Exports live in AIGC_HOME/onnx/, keyed by the model folder (a Hub snapshot folder names its revision),
its weights' sizes and times, and the precision. A file lock and an atomic rename make concurrent first
uses safe; a failed export leaves nothing behind and the caller falls back to transformers.

A failed export is remembered in AIGC_HOME/onnx/<key>.failed.json (the model's fingerprint, the precision,
the versions of aigc, onnxruntime-genai, onnxruntime, transformers and torch, and the reason): later runs
and servers raise FailedBefore at once instead of exporting again (5 s and more) until the model's files or
one of those versions change, or the file is deleted.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import settings
from ..errors import OutputError
from ..made_once import Memo, folder_bytes, library_versions, make_once

if TYPE_CHECKING:
    from ..core.events import Reporter

PRECISIONS = ("fp32", "int4")
# Architectures onnxruntime-genai's model builder converts (the ones aigc's aliases use and their kin).
SUPPORTED = {
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "phi",
    "phi3",
    "gemma",
    "gemma2",
    "gemma3_text",
    "olmo",
    "granite",
}


class ExportFailed(Exception):
    pass


def onnx_available() -> bool:
    return importlib.util.find_spec("onnxruntime_genai") is not None


def choose_backend(
    requested: str, device: str, model_type: str | None, dtype_requested: str
) -> tuple[str, str]:
    """(backend, why). auto: onnx on a CPU for a supported architecture at float32, else torch."""
    if requested == "torch":
        return "torch", "asked for"
    problems = []
    if not onnx_available():
        problems.append("onnxruntime-genai is not installed")
    if device != "cpu":
        problems.append(f"the onnx backend here runs on the CPU, not {device}")
    if model_type not in SUPPORTED:
        problems.append(f"onnxruntime-genai's builder does not convert {model_type} models")
    if dtype_requested not in ("auto", "float32", "fp32"):
        problems.append("--dtype applies to the torch backend (the onnx one takes --precision)")
    if requested == "onnx" and problems:
        return "torch", "; ".join(problems)
    if problems:
        return "torch", f"auto: {problems[0]}"
    return "onnx", "asked for" if requested == "onnx" else "auto: a CPU and a supported architecture"


LIBRARIES = ("onnxruntime-genai", "onnxruntime", "transformers", "torch")
"""What the export runs on (the model builder, its smoke test): a new version of one tries a failed export
again."""


def fingerprint(folder: Path) -> list[str]:
    """The model folder's resolved path and its weight files' names, sizes and modification times."""
    weights = sorted(p for p in folder.iterdir() if p.suffix in {".safetensors", ".bin"})
    return [str(folder.resolve())] + [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in weights]


def export_key(folder: Path, precision: str) -> str:
    digest = hashlib.sha256(json.dumps(fingerprint(folder)).encode()).hexdigest()[:16]
    return f"{folder.name}-{digest}-{precision}"


def exported(folder: Path, precision: str, console: Reporter) -> Path:
    """The export for this model and precision, made once. Raises ExportFailed with the reason, or
    made_once.FailedBefore (nothing tried) when the export failed before for the same model files,
    precision and library versions; its `marker` is the file to delete to try again.

    The caller falls back to transformers either way, with --backend onnx as with auto (an explicit
    backend falls back with a warning rather than failing), so a remembered failure holds for both."""
    target = settings().home / "onnx" / export_key(folder, precision)
    memo = Memo(
        lambda: {
            "model": fingerprint(folder),
            "precision": precision,
            "versions": library_versions(*LIBRARIES),
        },
        (ExportFailed,),
    )
    try:
        return make_once(
            target,
            "genai_config.json",
            lambda work: _export_with_status(folder, precision, work, console),
            lambda why: console.note(
                f"aigc: exporting {folder.name} to ONNX ({precision}) once, into {target}"
            ),
            memo=memo,
            space=(folder_bytes(folder), f"the ONNX export of {folder.name}"),
        )
    except OSError as exc:
        raise ExportFailed(f"cannot write the export: {exc}") from exc
    except OutputError as exc:  # no room for it: said, not remembered (space can be freed)
        raise ExportFailed(exc.message) from exc


def _export_with_status(folder: Path, precision: str, out: Path, console: Reporter) -> None:
    with console.status(f"Exporting {folder.name} to ONNX ({precision}), once"):
        _export(folder, precision, out)


def _export(folder: Path, precision: str, out: Path) -> None:
    """Run onnxruntime-genai's model builder, then one token as a smoke test."""
    with tempfile.TemporaryDirectory(prefix="aigc-onnx-cache-") as cache:
        command = [
            sys.executable,
            "-m",
            "onnxruntime_genai.models.builder",
            "-i",
            str(folder),
            "-o",
            str(out),
        ]
        command += ["-p", precision, "-e", "cpu", "-c", cache]
        result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0 or not (out / "genai_config.json").is_file():
        raise ExportFailed(_last_line(result, "the builder"))
    # Some exports build but cannot run here (an attention kernel's shape limits): try one token.
    smoke = subprocess.run(
        [sys.executable, "-c", SMOKE_TEST, str(out)], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if smoke.returncode != 0:
        raise ExportFailed(_last_line(smoke, "the exported model"))


SMOKE_TEST = """
import sys, onnxruntime_genai as og
model = og.Model(sys.argv[1])
params = og.GeneratorParams(model)
params.set_search_options(max_length=4, do_sample=False)
generator = og.Generator(model, params)
generator.append_tokens([1, 2, 3])
generator.generate_next_token()
"""


def _last_line(result: subprocess.CompletedProcess, what: str) -> str:
    lines = [ln.strip() for ln in (result.stderr or result.stdout or "").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else f"{what} exited {result.returncode}"
