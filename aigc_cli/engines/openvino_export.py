"""The image backend choice, and the one-time OpenVINO export of a pipeline's UNet and VAE decoder.

Exports live in AIGC_HOME/openvino/<key>/ as unet.xml/.bin and vae_decoder.xml/.bin (float32 weights), keyed
by the model folder and its UNet and VAE weights' names, sizes and times. made_once's file lock and atomic
rename make concurrent first uses safe; a damaged export is made again; a failed one leaves nothing behind
and raises ExportFailed (the caller falls back to diffusers on torch).

A failed export is remembered in AIGC_HOME/openvino/<key>.failed.json (the model's fingerprint, FORMAT, the
versions of aigc, openvino, torch and diffusers, and the reason): later runs and servers raise FailedBefore
at once instead of exporting again, until the UNet's or VAE's weights or one of those versions change, or
the file is deleted. A failure to write the export is not remembered.

Batch, height, width and the text length stay dynamic in the graphs: one export serves guidance on and off
(batch 2 and 1) and every size.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import settings
from ..errors import OutputError
from ..made_once import Memo, folder_bytes, library_versions, make_once

if TYPE_CHECKING:
    from ..core.events import Reporter

FORMAT = 1
"""Bumped when the exported graphs change, so that older exports are made again."""
PARTS = ("unet", "vae_decoder")
SMOKE_TOLERANCE = 1e-3
"""The smoke test's limit on |OpenVINO - torch|, relative to the largest torch output (at least 1)."""


class ExportFailed(Exception):
    pass


class _CannotWrite(OSError):
    """OpenVINO could not write the export: a disk's trouble, not the model's (not remembered)."""


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


AUTO_CHOICE = "auto: diffusers, the reference (the openvino backend runs when asked for: --backend openvino)"


def choose_image_backend(
    requested: str, device: str, dtype_requested: str, folder: Path, loras: bool
) -> tuple[str, str]:
    """(backend, why): "openvino" or "torch", and a short phrase for the user.

    requested: auto, torch or openvino. auto is diffusers on torch: in float32 the OpenVINO graphs measured
    no faster than diffusers on an idle CPU here (benchmarks/image_features.py: 1.02x the images per second
    at 512 px, 4 steps), not worth a one-time export of the UNet's size. openvino runs on a CPU, for a UNet
    pipeline, without LoRA adapters, at dtype auto/float32 or bfloat16 (OpenVINO's bf16 inference
    precision); else torch, with every reason."""
    if requested == "torch":
        return "torch", "asked for"
    if requested == "auto":
        return "torch", AUTO_CHOICE
    problems = []
    if not openvino_available():
        problems.append("openvino is not installed")
    if device != "cpu":
        problems.append(f"the openvino backend runs on the CPU, not {device}")
    if (problem := pipeline_problem(folder)) is not None:
        problems.append(problem)
    if loras:
        problems.append("LoRA adapters run on the torch backend")
    if dtype_requested not in ("auto", "float32", "fp32", "bfloat16"):
        problems.append(f"--dtype {dtype_requested} runs on the torch backend")
    if problems:
        return "torch", "; ".join(problems)
    return "openvino", "asked for"


def pipeline_problem(folder: Path) -> str | None:
    """Why the pipeline in `folder` cannot run on the openvino backend (read from its configs), or None."""
    unet = _config(folder / "unet" / "config.json")
    if unet.get("_class_name") != "UNet2DConditionModel":
        return "the pipeline has no UNet2DConditionModel"
    if unet.get("time_cond_proj_dim") is not None:
        return "its UNet takes a guidance embedding (LCM), which the export leaves out"
    if unet.get("class_embed_type") is not None or unet.get("encoder_hid_dim_type") is not None:
        return "its UNet takes class or image conditioning, which the export leaves out"
    if unet.get("addition_embed_type") not in (None, "text_time"):
        return f"its UNet takes {unet['addition_embed_type']} conditioning, which the export leaves out"
    if not isinstance(unet.get("cross_attention_dim", 1280), int):
        return "its UNet has a cross-attention width per block"
    if _config(folder / "vae" / "config.json").get("_class_name") != "AutoencoderKL":
        return "its VAE is not an AutoencoderKL"
    return None


def _config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


LIBRARIES = ("openvino", "torch", "diffusers")
"""What the export runs on: a new version of one tries a failed export again."""


def fingerprint(folder: Path) -> list[str | int]:
    """The model folder's resolved path, FORMAT, and its UNet and VAE weight files' names, sizes and
    modification times."""
    weights = sorted(
        p
        for part in ("unet", "vae")
        if (folder / part).is_dir()
        for p in (folder / part).iterdir()
        if p.suffix in {".safetensors", ".bin"}
    )
    return [str(folder.resolve()), FORMAT] + [
        f"{p.parent.name}/{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in weights
    ]


def export_key(folder: Path) -> str:
    """The export's folder name: the model folder's name and a hash of its fingerprint."""
    return f"{folder.name}-{hashlib.sha256(json.dumps(fingerprint(folder)).encode()).hexdigest()[:16]}"


def exported(folder: Path, console: Reporter) -> Path:
    """The OpenVINO export of the pipeline in `folder` (a folder with unet.xml/.bin, vae_decoder.xml/.bin),
    made once under AIGC_HOME/openvino. Raises ExportFailed with a short reason (nothing is left behind), or
    made_once.FailedBefore (nothing tried) when the export failed before for the same weights and library
    versions; its `marker` is the file to delete to try again.

    The export runs only for --backend openvino (auto is diffusers), and an explicit backend whose export
    fails falls back to diffusers with a warning rather than failing: so the remembered failure holds for
    the explicit backend too (else every request would export again)."""
    target = settings().home / "openvino" / export_key(folder)
    memo = Memo(
        lambda: {"model": fingerprint(folder), "versions": library_versions(*LIBRARIES)}, (ExportFailed,)
    )

    def announce(why: str | None) -> None:
        if why is None:
            console.note(f"aigc: exporting {folder.name} to OpenVINO once, into {target}")
        else:
            console.warn(f"the OpenVINO export of {folder.name} is damaged ({why}): exporting it again")

    def export(work: Path) -> None:
        with console.status(f"Exporting {folder.name} to OpenVINO, once"):
            _export(folder, work)

    from ..errors import UsageError

    try:
        space = (folder_bytes(folder), f"the OpenVINO export of {folder.name}")
        return make_once(target, "unet.xml", export, announce, ir_problem, memo, space)
    except OSError as exc:
        raise ExportFailed(f"cannot write the export: {exc}") from exc
    except OutputError as exc:  # no room for it: said, not remembered (space can be freed)
        raise ExportFailed(exc.message) from exc
    except UsageError as exc:  # AIGC_HOME/openvino cannot be made (config.ensure_home)
        raise ExportFailed(exc.message) from exc


def ir_problem(target: Path) -> str | None:
    """What is wrong with an export folder (a missing file, a .bin shorter than its .xml needs), or None.
    Reads the .xml files only."""
    for part in PARTS:
        xml, weights = target / f"{part}.xml", target / f"{part}.bin"
        if not xml.is_file() or not weights.is_file():
            return f"{part}.xml or {part}.bin is missing"
        try:
            graph = xml.read_text(encoding="utf-8", errors="replace")
            size = weights.stat().st_size
        except OSError as exc:
            return f"{part} cannot be read ({exc})"
        if "</net>" not in graph:
            return f"{xml.name} is truncated"
        ends = [int(a) + int(b) for a, b in re.findall(r'offset="(\d+)" size="(\d+)"', graph)]
        if max(ends, default=0) > size:
            return f"{weights.name} is truncated ({size} of {max(ends)} bytes)"
    return None


def _export(folder: Path, out: Path) -> None:
    """Convert the UNet and the VAE decoder (float32) into `out`, each checked against torch on small
    inputs. Raises ExportFailed naming the part and the reason."""
    import gc
    import warnings

    import torch

    for part in PARTS:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the tracer's warnings about Python branches on shapes
            try:
                _export_part(folder, part, out)
            except (ExportFailed, _CannotWrite):
                raise
            except Exception as exc:
                raise ExportFailed(f"the {part.replace('_', ' ')} did not export: {_reason(exc)}") from exc
        gc.collect()  # one part's torch weights at a time


def _export_part(folder: Path, part: str, out: Path) -> None:
    """Trace one part into out/<part>.xml/.bin, then run the IR once against torch on other inputs.

    The trace's latents have sizes that are not multiples of the UNet's down-sampling factor, so the
    traced graph passes each skip connection's size to its up-sampler, as diffusers does for such sizes:
    any size then works (the same nearest-neighbour result as the factor-of-2 path for the others)."""
    import gc

    import openvino as ov
    import torch

    torch.manual_seed(0)
    module, inputs, factor = _load_part(folder, part)
    xml = out / f"{part}.xml"
    graph = ov.convert_model(module, example_input=tuple(inputs(1, factor + 1, factor + 3)))
    try:
        ov.save_model(graph, xml, compress_to_fp16=False)
    except (OSError, RuntimeError) as exc:  # OpenVINO raises RuntimeError for a file it cannot write
        raise _CannotWrite(_reason(exc)) from exc
    small = inputs(2, 2 * factor, 3 * factor)
    expected = module(*small).numpy()
    del graph, module  # the torch weights go before OpenVINO compiles its own copy
    gc.collect()
    compiled = ov.Core().compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled.create_infer_request().infer([t.numpy() for t in small])[0]
    scale = max(1.0, float(abs(expected).max()))
    difference = float(abs(got - expected).max()) if got.shape == expected.shape else float("inf")
    if not difference <= SMOKE_TOLERANCE * scale:
        raise ExportFailed(f"the {part} differs from torch by {difference:.3g} (shape {got.shape})")


def _load_part(folder: Path, part: str) -> tuple[Any, Callable[[int, int, int], list[Any]], int]:
    """(torch module in float32, inputs(batch, height, width) -> random inputs, the UNet's down-sampling
    factor or 1). `inputs` holds no reference to the module."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    if part == "unet":
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", dtype=torch.float32).eval()
        factor = 2 ** (len(unet.config.block_out_channels) - 1)
        return _unet_graph(unet), functools.partial(_unet_inputs, unet.config, folder), factor
    vae = AutoencoderKL.from_pretrained(folder / "vae", dtype=torch.float32).eval()
    return vae.decoder, functools.partial(_latents, vae.config.latent_channels), 1


def _latents(channels: int, batch: int, height: int, width: int) -> list[Any]:
    import torch

    return [torch.randn(batch, channels, height, width)]


def _unet_graph(unet: Any) -> Any:
    """A module whose forward takes the UNet's inputs as plain tensors and returns the noise prediction:
    sample (B, C, H, W), timestep (B,), encoder_hidden_states (B, T, D)[, text_embeds, time_ids (SDXL)]."""
    import torch

    class UNetGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, encoder_hidden_states, text_embeds=None, time_ids=None):
            added = None if text_embeds is None else {"text_embeds": text_embeds, "time_ids": time_ids}
            return self.unet(
                sample, timestep, encoder_hidden_states, added_cond_kwargs=added, return_dict=False
            )[0]

    return UNetGraph()


def _unet_inputs(config: Any, folder: Path, batch: int, height: int, width: int) -> list[Any]:
    """Random UNet inputs of this batch and latent size (SDXL's added conditions when the UNet takes them)."""
    import torch

    inputs = [
        torch.randn(batch, config.in_channels, height, width),
        torch.full((batch,), 999.0),
        torch.randn(batch, 77, config.cross_attention_dim),
    ]
    if config.addition_embed_type == "text_time":
        pooled = _config(folder / "text_encoder_2" / "config.json").get("projection_dim")
        ids = 6  # SDXL's original size, crop corner and target size
        if pooled is None:
            pooled = config.projection_class_embeddings_input_dim - ids * config.addition_time_embed_dim
        else:
            ids = (config.projection_class_embeddings_input_dim - pooled) // config.addition_time_embed_dim
        inputs += [torch.randn(batch, pooled), torch.randn(batch, ids)]
    return inputs


def _reason(exc: BaseException) -> str:
    """The root cause in one line (OpenVINO wraps a tracing error in its own)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
