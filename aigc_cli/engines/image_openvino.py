"""Images with the diffusers pipeline whose UNet and VAE decoder run on OpenVINO (CPU, float32 unless bfloat16
is asked for), from the export openvino_export makes once.

Everything else is the diffusers pipeline as it is: schedulers, the CPU generator's noise, callbacks, the text
encoders and the VAE encoder (image-to-image, inpainting) on torch in float32. pipe.unet is a stand-in module
that keeps the UNet's config and calls the compiled graph; pipe.vae.decoder likewise. The UNet's torch
weights are never read. The stand-ins are plain torch modules, so `from_pipe` hands them to image-to-image
and inpainting pipelines like any component.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .base import EngineKey
from .image import ImageRequest, ImageResult
from .image_diffusers import DiffusersEngine

PRECISION_HINTS = {"float32": "f32", "bfloat16": "bf16"}
"""--dtype -> OpenVINO's INFERENCE_PRECISION_HINT. Always set: left alone, OpenVINO runs bf16 on CPUs that
have it."""


class OpenVinoImageEngine(DiffusersEngine):
    backend = "openvino"

    @classmethod
    def load(cls, key: EngineKey) -> OpenVinoImageEngine:
        """key.folder: a diffusers UNet pipeline; key.device: cpu; key.dtype: float32 or bfloat16 (the
        precision OpenVINO computes in; torch parts stay float32); key.option("export"): the folder from
        openvino_export.exported() (made here, quietly, when absent). ValueError for another dtype or
        device; ExportFailed when the export cannot be made, made_once.FailedBefore when it failed before
        (not tried again)."""
        from ..console import Console
        from .openvino_export import exported

        if key.dtype not in PRECISION_HINTS or key.device != "cpu":
            raise ValueError(
                f"the openvino backend runs on the CPU in float32 or bfloat16, not {key.device} {key.dtype}"
            )
        folder = Path(key.folder)
        export = Path(key.option("export") or exported(folder, Console(quiet=True)))
        return cls(load_pipeline(folder, export, PRECISION_HINTS[key.dtype]), key.device, key.dtype)

    def generate(
        self, request: ImageRequest, on_step: Callable[[int, int], None] | None = None
    ) -> Iterator[ImageResult]:
        """As DiffusersEngine.generate; UsageError for LoRA adapters (the exported UNet has its weights
        baked in: the backend choice sends LoRA requests to torch)."""
        if request.loras:
            from ..errors import UsageError

            raise UsageError("LoRA adapters run on the torch backend: use --backend torch")
        yield from super().generate(request, on_step)


def load_pipeline(folder: Path, export: Path, hint: str = "f32") -> Any:
    """The text-to-image pipeline of `folder` (torch, float32, CPU) with its UNet and VAE decoder replaced
    by the compiled graphs of `export`, computed at OpenVINO precision `hint` (f32 or bf16)."""
    import torch

    from ..loading import load_image_pipeline

    unet_class, decoder_class = _stand_ins()
    unet = unet_class(compile_graph(export / "unet.xml", hint), unet_config(folder))
    pipe = load_image_pipeline(folder, "cpu", torch.float32, unet=None)  # the UNet's weights are never read
    # Made again with the stand-in, so that what the pipeline's __init__ reads of its UNet (sample size)
    # comes from the UNet's own config.
    pipe = type(pipe).from_pipe(pipe, unet=unet)
    pipe.vae.decoder = decoder_class(compile_graph(export / "vae_decoder.xml", hint))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to("cpu")


def compile_graph(xml: Path, hint: str) -> Any:
    """An openvino.CompiledModel of the IR at `xml` on the CPU, at inference precision `hint`."""
    import openvino as ov

    return ov.Core().compile_model(
        xml, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
    )


def unet_config(folder: Path) -> Any:
    """The config UNet2DConditionModel.from_pretrained(folder/unet) would have (defaults filled in), made on
    the meta device: no weights are read or allocated."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        model = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
    return model.config


class Graph:
    """Runs a compiled model; safe from several threads: each call takes an idle infer request, or makes
    one (a request keeps its buffers between calls)."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self._idle: list[Any] = []

    def __call__(self, *tensors: Any) -> Any:
        """The first output for these inputs, in the graph's input order: float32 CPU tensors in, one out."""
        import torch

        try:
            request = self._idle.pop()  # list.pop and append are atomic
        except IndexError:
            request = self.compiled.create_infer_request()
        try:
            arrays = [t.detach().to("cpu", torch.float32).contiguous().numpy() for t in tensors]
            result = request.infer(arrays, share_inputs=True)  # outputs are copied out of the request
            return torch.from_numpy(result[0])
        finally:
            self._idle.append(request)


@functools.cache
def _stand_ins() -> tuple[type, type]:
    """The stand-in module classes (made on first use: torch is imported only then)."""
    import torch
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    class OpenVinoUNet(torch.nn.Module):
        """UNet2DConditionModel's call on a compiled graph; config, dtype (float32) and device (cpu) answer
        as the UNet's would."""

        def __init__(self, compiled: Any, config: Any) -> None:
            super().__init__()
            self.graph = Graph(compiled)
            self.config = config
            self.text_time = config.addition_embed_type == "text_time"
            if self.text_time:  # SDXL pipelines check the added embedding's width against their time ids
                linear = type("Linear", (), {"in_features": config.projection_class_embeddings_input_dim})
                self.add_embedding = type("Embedding", (), {"linear_1": linear})()

        @property
        def dtype(self) -> torch.dtype:
            return torch.float32

        @property
        def device(self) -> torch.device:
            return torch.device("cpu")

        def forward(
            self,
            sample,
            timestep,
            encoder_hidden_states,
            timestep_cond=None,
            cross_attention_kwargs=None,
            added_cond_kwargs=None,
            return_dict=True,
        ):
            """sample (B, C, H, W), timestep (a number, () or (B,)), encoder_hidden_states (B, T, D); SDXL:
            added_cond_kwargs text_embeds (B, P) and time_ids (B, N). The noise prediction (B, C, H, W)."""
            if timestep_cond is not None or cross_attention_kwargs:
                raise ValueError("the OpenVINO UNet takes no timestep_cond or cross_attention_kwargs")
            batch = sample.shape[0]
            timestep = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1)
            inputs = [sample, timestep.expand(batch) if timestep.numel() == 1 else timestep]
            inputs.append(encoder_hidden_states)
            if self.text_time:
                inputs += [added_cond_kwargs["text_embeds"], added_cond_kwargs["time_ids"]]
            out = self.graph(*inputs)
            return UNet2DConditionOutput(sample=out) if return_dict else (out,)

    class OpenVinoDecoder(torch.nn.Module):
        """The VAE's decoder (after post_quant_conv) on a compiled graph: latents (B, C, h, w) -> pixels
        (B, 3, H, W) in about [-1, 1], H and W the VAE's scale factor times h and w."""

        def __init__(self, compiled: Any) -> None:
            super().__init__()
            self.graph = Graph(compiled)

        def forward(self, sample, latent_embeds=None):
            if latent_embeds is not None:
                raise ValueError("the OpenVINO VAE decoder takes no latent_embeds")
            return self.graph(sample)

    return OpenVinoUNet, OpenVinoDecoder
