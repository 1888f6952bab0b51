"""Find a model's files (a folder, an embedded package, the Hub via hub.py), check its modality before
any weights load, and load it onto a device."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import settings
from .errors import ModelUnavailableError, WrongModalityError
from .hub import cached_snapshot, download, fetch_files
from .made_once import make_once, safetensors_problem
from .registry import ModelRef, ModelSpec

if TYPE_CHECKING:
    from .core.events import Reporter

SPEECH_MODEL_TYPES = {"vits", "speecht5", "fastspeech2_conformer", "bark", "seamless_m4t", "musicgen"}


def quiet_libraries(console: Reporter, diffusers: bool = False) -> None:
    """The libraries' own progress bars off and their logging at errors only (warnings with --verbose),
    through their own switches: aigc draws the one spinner or bar a run shows (console.Console)."""
    import huggingface_hub.utils as hub_utils
    import transformers

    if console.verbose:
        transformers.utils.logging.set_verbosity_warning()
    else:
        transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    hub_utils.disable_progress_bars()
    if diffusers:
        import diffusers as diffusers_lib

        if console.verbose:
            diffusers_lib.utils.logging.set_verbosity_warning()
        else:
            diffusers_lib.utils.logging.set_verbosity_error()
        diffusers_lib.utils.logging.disable_progress_bar()
    if not console.verbose:  # library deprecation notices are not the user's business
        import warnings

        for category in (FutureWarning, DeprecationWarning, UserWarning):
            warnings.filterwarnings("ignore", category=category)


# --- modality ------------------------------------------------------------------------------------------


def detect_modality(folder: Path) -> tuple[str | None, str]:
    """(modality or None, a short description) from the folder's config files, without loading weights."""
    index = folder / "model_index.json"
    if index.is_file():
        cls = str(_read_json(index).get("_class_name", "pipeline"))
        if any(word in cls for word in ("Audio", "Music", "Video", "Motion", "Text2Vid", "I2VGen")):
            return None, f"a diffusers {cls}"
        return "image", f"a diffusers {cls}"
    if any(folder.glob("*.onnx.json")) and any(folder.glob("*.onnx")):
        return "speech", "a Piper voice"
    config = folder / "config.json"
    if not config.is_file():
        return None, "not a model folder (it has no config.json or model_index.json)"
    data = _read_json(config)
    model_type = data.get("model_type", "unknown")
    architectures = data.get("architectures") or []
    described = f"a {model_type} model" + (f" ({', '.join(architectures)})" if architectures else "")
    if model_type in SPEECH_MODEL_TYPES:
        return "speech", described
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return "text", described
    if not architectures:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            return "text", described
    return None, described


def check_modality(folder: Path, modality: str, name: str) -> None:
    found, described = detect_modality(folder)
    if found != modality:
        wanted = {
            "text": "a causal language model",
            "image": "a text-to-image pipeline",
            "speech": "a speech model",
        }
        raise WrongModalityError(f"'{name}' is {described}, not {wanted[modality]}", found=found)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(f"Cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def locate(ref: ModelRef, modality: str | None, console: Reporter, trust_remote_code: bool = False) -> Path:
    """The local folder holding the model, fetching or converting it when needed; its modality, its need
    of repository code (text) and its weights checked before anything loads."""
    if ref.folder is not None:
        folder = ref.folder
    elif ref.spec is not None and (embedded := embedded_folder(ref.spec, console)) is not None:
        folder = embedded
    elif ref.files:
        assert ref.repo is not None
        folder = fetch_files(ref.repo, ref.files, ref.name, console)
    else:
        assert ref.repo is not None

        def before_weights(config_folder: Path) -> None:
            if modality is not None:
                check_modality(config_folder, modality, ref.name)

        folder = cached_snapshot(ref.repo) or download(ref.repo, console, ref.name, before_weights)
    if modality is not None:
        check_modality(folder, modality, ref.name)
        if modality == "text":
            check_remote_code(folder, trust_remote_code)
        check_weights(folder, ref.name, local=ref.folder is not None)
    return folder


WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.onnx", "*.gguf", "*.safetensors.index.json")


def check_weights(folder: Path, name: str, local: bool = False) -> None:
    """A model folder whose weights are missing fails here, naming what is missing (exit 3), not deep in a
    library. A diffusers pipeline needs weights in each model component's folder."""
    index = folder / "model_index.json"
    if index.is_file():
        components = [
            part
            for part, value in _read_json(index).items()
            if isinstance(value, list)
            and len(value) == 2
            and value[0] in {"diffusers", "transformers"}
            and (folder / part / "config.json").is_file()
        ]
        places = [folder / part for part in components]
    else:
        places = [folder]
    for place in places:
        if not any(any(place.glob(pattern)) for pattern in WEIGHT_FILES):
            where = place.relative_to(folder) if place != folder else folder
            remedy = (
                "copy the model's weights there again"
                if local
                else f"pull it again with `aigc models pull {name}`, or check the folder"
            )
            raise ModelUnavailableError(
                f"'{name}' has no weights in {where} (a copy or download that did not finish?): {remedy}"
            )


# --- the embedded text model -----------------------------------------------------------------------------


def embedded_gguf(spec: ModelSpec) -> Path | None:
    """The GGUF file inside the spec's registry package, found without importing the package."""
    package = embedded_package(spec)
    ggufs = sorted(package.glob("*.gguf")) if package is not None else []
    return ggufs[0] if ggufs else None


def embedded_package(spec: ModelSpec) -> Path | None:
    """The folder of the spec's registry package, found without importing it (None when absent)."""
    import importlib.util

    if spec.embedded is None:
        return None
    found = importlib.util.find_spec(spec.embedded)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations)))


def embedded_folder(spec: ModelSpec, console: Reporter) -> Path | None:
    """A model folder from the spec's registry package (None when it is not installed).

    A Piper voice is used where it lies; a GGUF is converted once into a safetensors folder.
    """
    if spec.modality == "speech":
        package = embedded_package(spec)
        data = package / "data" if package is not None else None
        return data if data is not None and any(data.glob("*.onnx")) else None
    gguf = embedded_gguf(spec)
    if gguf is None:
        return None
    target = settings().home / "embedded" / f"{gguf.stem}-{gguf.stat().st_size}"

    def announce(why: str | None) -> None:
        if why is None:
            console.note(f"aigc: converting the embedded {spec.name} model once, into {target}")
        else:
            console.warn(f"the converted {spec.name} model is damaged ({why}): converting it again")

    def convert(work: Path) -> None:
        with console.status(f"Converting the embedded {spec.name} model, once (about 20 s)"):
            convert_gguf(gguf, work, console)

    # float32 from a 4-5 bit GGUF: about 5.3 times its size (SmolLM2 135M: 98 MB -> 517 MB)
    space = (gguf.stat().st_size * 6, f"the converted {spec.name} model")
    return make_once(target, "config.json", convert, announce, safetensors_problem, space=space)


def convert_gguf(gguf: Path, out: Path, console: Reporter) -> None:
    """De-quantise a GGUF into a float32 safetensors folder that loads in well under a second."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    quiet_libraries(console)
    # The GGUF reader draws its own tqdm bar (no switch of transformers turns it off): hushed, -v or not
    # (aigc's spinner is bound to the real stderr, so it still shows)
    with contextlib.redirect_stderr(io.StringIO()), _gguf_parsed_once():
        # from_pretrained reads the config unless given one: read once, for both
        config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, config=config)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, config=config)
    # The de-quantised weights are plain tensors now; the GGUF quantizer only blocks saving them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


@contextlib.contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """Within: one gguf.GGUFReader per file. transformers parses the whole GGUF again in each from_pretrained
    (the config, the tokenizer, the weights: SmolLM2's 49k-token vocabulary, about 5 s a parse on a 2-core
    machine); the reader is read-only, so the three share one."""
    import gguf

    make = gguf.GGUFReader
    readers: dict[tuple[str, str], Any] = {}

    def reader(path: Any, mode: str = "r") -> Any:
        key = (str(path), mode)
        if key not in readers:
            readers[key] = make(path, mode)
        return readers[key]

    gguf.GGUFReader = reader  # transformers imports it from gguf at each call
    try:
        yield
    finally:
        gguf.GGUFReader = make


# --- loading ------------------------------------------------------------------------------------------


def load_causal_lm(folder: Path, device: str, dtype: Any, trust_remote_code: bool):
    """(model, tokenizer) from a local folder; never runs repository code unless asked."""
    import torch
    from transformers import AutoModelForCausalLM

    check_remote_code(folder, trust_remote_code)
    tokenizer = load_tokenizer(folder, trust_remote_code)
    spread = device == "cuda" and torch.cuda.device_count() > 1
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        device_map="auto" if spread else None,
    )
    if not spread:
        model.to(device)
    model.eval()
    return model, tokenizer


def load_tokenizer(folder: Path, trust_remote_code: bool):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)


def check_remote_code(folder: Path, trust_remote_code: bool) -> None:
    """A model whose architecture transformers does not know needs code from its repository: refused
    (exit 3) unless the user trusts it."""
    config = _read_json(folder / "config.json")
    if config.get("auto_map") and not trust_remote_code and not _known_architecture(config):
        raise ModelUnavailableError(
            f"{folder.name} needs code from its repository to load; pass --trust-remote-code if you trust it"
        )


def _known_architecture(config: dict[str, Any]) -> bool:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return config.get("model_type") in CONFIG_MAPPING_NAMES


def load_image_pipeline(folder: Path, device: str, dtype: Any, offload: bool = False, **components: Any):
    """A diffusers text-to-image pipeline from a local folder, on the device (or offloaded to the CPU
    between uses, on a CUDA device, when `offload`); `components` replace the folder's (unet=None: its
    weights are not read)."""
    import diffusers

    try:
        pipe = diffusers.AutoPipelineForText2Image.from_pretrained(folder, dtype=dtype, **components)
    except ValueError as exc:
        if "AutoPipeline" in str(exc) or "is not supported" in str(exc):
            raise WrongModalityError(
                f"{folder.name} has no text-to-image pipeline that aigc can run ({exc})"
            ) from exc
        raise
    pipe.set_progress_bar_config(disable=True)
    if offload and device.startswith("cuda"):
        pipe.enable_model_cpu_offload()
        return pipe
    return pipe.to(device)


def revision_of(folder: str | Path | None) -> str | None:
    """The Hub commit of a model folder in the Hugging Face cache (`.../snapshots/COMMIT`), else None."""
    if folder is None:
        return None
    path = Path(folder)
    return path.name if path.parent.name == "snapshots" else None


def source_of(ref: ModelRef, folder: Path) -> str:
    """What a record names as the model's source: the Hub repo for a model from the Hugging Face cache,
    else the folder (the user's, or an embedded model's)."""
    return ref.repo if ref.repo and "snapshots" in folder.parts else str(folder)


def is_piper_voice(folder: Path) -> bool:
    return any(p.with_suffix(".onnx.json").is_file() for p in folder.glob("*.onnx"))


def speech_backend(folder: Path) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """(backend, load options) for a speech folder: a Piper voice, or the transformers pipeline (with the
    HiFi-GAN a SpeechT5 model needs, from the folder's vocoder/ subfolder)."""
    if is_piper_voice(folder):
        if importlib_util_missing("piper"):
            raise ModelUnavailableError(
                "Piper voices need the optional piper-tts package (GPL-3.0-or-later): pip install piper-tts"
            )
        return "piper", ()
    vocoder = folder / "vocoder"
    if (vocoder / "config.json").is_file():
        return "transformers", (("vocoder", str(vocoder)),)
    if _read_json(folder / "config.json").get("model_type") == "speecht5":
        raise ModelUnavailableError(
            f"{folder.name} is a SpeechT5 model: it needs a HiFi-GAN in {folder}/vocoder"
        )
    return "transformers", ()


def importlib_util_missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None
