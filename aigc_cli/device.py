"""Device and dtype choice. torch is imported inside the functions."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .errors import UsageError

DTYPE_NAMES = {
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


@dataclass(frozen=True)
class DeviceChoice:
    device: str
    """A torch device string: cuda, cuda:1, mps, xpu, cpu."""
    reason: str
    """Why this device: shown by `aigc doctor` and --verbose."""


def available_devices() -> list[str]:
    import torch

    found = []
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        found.append("xpu")
    found.append("cpu")
    return found


def accelerator_possible() -> bool:
    """Whether this machine could have a CUDA, ROCm, MPS or XPU device, judged without importing torch
    (seconds): a GPU's device node, WSL's GPU bridge, an Apple Silicon Mac, an Intel render node. False
    means the CPU for sure; True means torch must be asked."""
    import glob
    import platform

    if platform.system() == "Darwin":
        return platform.machine() == "arm64"
    if platform.system() != "Linux":
        return True
    if any(os.path.exists(node) for node in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")):
        return True
    from pathlib import Path

    for vendor in glob.glob("/sys/class/drm/renderD*/device/vendor"):
        with contextlib.suppress(OSError):
            if Path(vendor).read_text().strip() == "0x8086":  # Intel: possibly an XPU
                return True
    return False


@lru_cache(maxsize=8)
def pick_device(requested: str = "auto") -> DeviceChoice:
    """`auto` takes cuda, then mps, then xpu, then cpu; a named device must exist."""
    requested = (requested or "auto").strip().lower()
    if requested == "cpu":
        return DeviceChoice("cpu", "asked for")
    if requested == "auto" and not accelerator_possible():
        return DeviceChoice("cpu", "auto: no CUDA, MPS or XPU device found")
    found = available_devices()
    if requested == "auto":
        first = found[0]
        if first.startswith("cuda"):
            return DeviceChoice("cuda", "auto: CUDA is available")
        if first == "mps":
            return DeviceChoice("mps", "auto: Apple MPS is available (no CUDA)")
        if first == "xpu":
            return DeviceChoice("xpu", "auto: Intel XPU is available (no CUDA or MPS)")
        return DeviceChoice("cpu", "auto: no CUDA, MPS or XPU device found")
    kind, _, index = requested.partition(":")
    if kind not in {"cuda", "mps", "xpu", "cpu"} or (index and not index.isdigit()):
        raise UsageError(f"Unknown device '{requested}': use auto, cpu, cuda, cuda:N, mps or xpu")
    wanted = f"{kind}:{index or 0}" if kind == "cuda" else kind
    if wanted not in found:
        raise UsageError(
            f"Device '{requested}' is not available here (found: {', '.join(found)}); use --device auto"
        )
    return DeviceChoice(requested, "asked for")


def pick_dtype(device: str, requested: str = "auto") -> tuple[str, str]:
    """The dtype's name and why: float32 on cpu; bfloat16 on CUDA that supports it, else float16."""
    requested = (requested or "auto").strip().lower()
    if requested != "auto":
        name = DTYPE_NAMES.get(requested)
        if name is None:
            raise UsageError(f"Unknown dtype '{requested}': use auto, float32, float16 or bfloat16")
        return name, "asked for"
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_bf16_supported():
            return "bfloat16", "auto: bfloat16 is supported on this GPU"
        return "float16", "auto: float16 (this GPU has no fast bfloat16)"
    if device in {"mps", "xpu"}:
        return "float16", f"auto: float16 on {device}"
    return "float32", "auto: float32 on cpu (exact and fastest there)"


def torch_dtype(name: str) -> Any:
    """torch.float32 for "float32", and so on."""
    import torch

    return getattr(torch, DTYPE_NAMES.get(name, name))


def dtype_name(dtype: Any) -> str:
    return dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")


def make_generator(seed: int) -> Any:
    """A CPU generator: the same seed gives the same noise on any device."""
    import torch

    return torch.Generator("cpu").manual_seed(seed)
