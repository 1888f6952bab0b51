"""One settings schema per modality, and the one resolver.

Each setting is a dataclass field whose metadata (a `Knob`) carries its type, range, unit, help and where it
may come from. The same schema makes the Typer options (every flag defaults to None: not given), names the
config.toml keys, says what `--from` takes from a record, and (later) the fields of API requests and batch
jobs. `resolve_settings` returns every value with its source, in the order

    flag > --from record > environment > config.toml > the alias's defaults > the model's own (None here),

and validates every value whatever its source: a bad value is exit 2 naming where it came from.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .device import DTYPE_NAMES
from .engines import backends
from .engines.image import SCHEDULERS, lora_problem
from .errors import UsageError
from .records import served_folder
from .registry import DEFAULT_MODELS, lookup
from .streams import as_text

DEVICE = re.compile(r"^(auto|cpu|mps|xpu|cuda(:\d+)?)$")
SEED_MAX = 2**32 - 1
ALIAS_THEN_MODEL = "the alias's, else the model's"
TRUTH = {"1", "true", "yes", "on"}
FALSEHOOD = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Knob:
    """What the schema knows of one setting."""

    help: str
    """One line for --help and the API schema's description; a range that helps a person is said in it."""
    kind: type
    """str, int, float, bool, or list (of str)."""
    flag: str | None = None
    """The long flag, `--max-tokens`; None for a setting with no flag."""
    short: str | None = None
    """A short flag, `-m`."""
    unit: str = ""
    """The unit of a number, said in /openapi.json: seconds, pixels, tokens."""
    metavar: str = ""
    """What --help shows for the value, as a person writes it (MODEL, SECONDS); N for an integer, X for
    another number and TEXT for a string when empty."""
    low: float | None = None
    """The smallest value allowed (inclusive unless `low_open`)."""
    low_open: bool = False
    high: float | None = None
    """The largest value allowed (inclusive)."""
    choices: tuple[str, ...] = ()
    """The values allowed, for a string setting."""
    multiple_of: int | None = None
    """A number that must be a positive multiple of this (said in /openapi.json; `check` enforces it)."""
    env: str | None = None
    """An environment variable that sets it (between the flag and config.toml)."""
    in_config: bool = True
    """A key of config.toml (and of batch jobs and API bodies, later)."""
    in_record: bool = False
    """Taken from a file's record by `--from`."""
    normalize: Callable[[Any], Any] | None = None
    """Turns an accepted spelling into the canonical value (fp16 -> float16)."""
    check: Callable[[Any], str | None] | None = None
    """A further check: returns what is wrong, or None."""
    default_text: str = ""
    """What happens when nobody sets it, for --help."""
    noun: str = ""
    """What a wrong choice is called in "Unknown device 'x'" (the field's name by default)."""
    path: bool = False
    """A file or folder name, kept byte for byte; other text from argv with bytes that are not UTF-8
    has each bad byte turned into U+FFFD, as the prompt does."""


def knob(help: str, kind: type, **kwargs: Any) -> Any:
    """A dataclass field (default None: not set) that carries its Knob."""
    return field(default=None, metadata={"knob": Knob(help, kind, **kwargs)})


def _device_problem(value: str) -> str | None:
    return None if DEVICE.match(value) else "use auto, cpu, cuda, cuda:N, mps or xpu"


def _dtype(value: str) -> str:
    spelled = value.strip().lower()
    return "auto" if spelled == "auto" else DTYPE_NAMES.get(spelled, value)


def _multiple_of_8(value: int) -> str | None:
    return None if value > 0 and value % 8 == 0 else "must be a positive multiple of 8"


MIN_TEMPERATURE = 0.01
"""The smallest temperature (other than 0, greedy) and repetition penalty: sampling divides the logits by
them, and below about 1e-37 the quotient overflows float32 to inf and the probabilities become NaN
(transformers then fails with "probability tensor contains inf, nan"); 0.01 leaves a wide margin and is
below any value that samples differently from greedy in practice."""


def _greedy_or_at_least(low: float) -> Callable[[float], str | None]:
    def check(value: float) -> str | None:
        return None if value == 0 or value >= low else f"must be 0 (greedy) or at least {low:g}"

    return check


def knob_env(modality: str) -> str:
    return f"AIGC_{modality.upper()}_MODEL"


def _model_knob(modality: str) -> Any:
    return knob(
        "Alias, Hub repo id or local folder.",
        str,
        flag="--model",
        short="-m",
        metavar="MODEL",
        env=knob_env(modality),
        in_record=modality == "image",
        default_text=f"{knob_env(modality)}, else config.toml, else {DEFAULT_MODELS[modality]}",
        path=True,
        normalize=served_folder,  # on aigc serve, a --preload folder's name (a record's) means that folder
    )


def _size_knob(side: str) -> Any:
    return knob(
        f"{side.capitalize()}, a multiple of 8.",
        int,
        flag=f"--{side}",
        high=8192,
        unit="pixels",
        metavar="PIXELS",
        check=_multiple_of_8,
        multiple_of=8,
        in_record=True,
        default_text="the model's",
    )


def _seed_knob(count: bool = True) -> Any:
    return knob(
        "Seed; result i of several uses seed+i." if count else "Seed: the same seed gives the same audio.",
        int,
        flag="--seed",
        low=0,
        high=SEED_MAX,
        in_config=False,
        in_record=True,
        default_text="drawn at random and reported",
    )


def _count_knob() -> Any:
    # Item i uses seed + i: more results than seeds cannot be made.
    return knob(
        "How many results.", int, flag="--count", short="-n", low=1, high=SEED_MAX + 1, in_config=False
    )


def _device_knob() -> Any:
    return knob(
        "auto, cpu, cuda, cuda:N, mps or xpu.",
        str,
        flag="--device",
        metavar="DEVICE",
        env="AIGC_DEVICE",
        normalize=lambda v: v.strip().lower(),
        check=_device_problem,
        noun="device",
        default_text="auto",
    )


def _dtype_knob() -> Any:
    return knob(
        "auto, float32, float16 or bfloat16.",
        str,
        flag="--dtype",
        metavar="DTYPE",
        normalize=_dtype,
        choices=("auto", "float32", "float16", "bfloat16"),
        noun="dtype",
        default_text="auto",
    )


def _mark_knob() -> Any:
    return knob(
        "Say in the file that AI made it (IPTC digital source type in XMP, or an audio tag).",
        bool,
        flag="--mark",
        env="AIGC_MARK",
        default_text="on",
    )


def _backend_knob(modality: str, help: str) -> Any:
    """--backend: auto or a backend of the engines table for the modality; AIGC_<MODALITY>_BACKEND."""
    return knob(
        help,
        str,
        flag="--backend",
        metavar="BACKEND",
        env=f"AIGC_{modality.upper()}_BACKEND",
        choices=("auto", *backends(modality)),
        normalize=lambda v: v.strip().lower(),
        default_text="auto",
    )


@dataclass(frozen=True)
class TextSettings:
    """Every knob of `aigc text` (and, later, of chat, API text requests and text batch jobs)."""

    model: str | None = _model_knob("text")
    system: str | None = knob("System message (chat models).", str, flag="--system")
    raw: bool | None = knob("Send the prompt as it is, without the chat template.", bool, flag="--raw")
    max_tokens: int | None = knob(
        "Most new tokens; capped to what the context leaves.",
        int,
        flag="--max-tokens",
        low=1,
        unit="tokens",
        default_text="the alias's, else 256",
    )
    temperature: float | None = knob(
        "Sampling temperature; 0 means greedy.",
        float,
        flag="--temperature",
        low=0.0,
        check=_greedy_or_at_least(MIN_TEMPERATURE),
        default_text="the model's",
    )
    top_k: int | None = knob(
        "Sample from the K likeliest tokens; 0 turns it off.",
        int,
        flag="--top-k",
        metavar="K",
        low=0,
        default_text=ALIAS_THEN_MODEL,
    )
    top_p: float | None = knob(
        "Nucleus sampling: the likeliest tokens up to this total probability (0 to 1).",
        float,
        flag="--top-p",
        metavar="P",
        low=0.0,
        low_open=True,
        high=1.0,
        default_text=ALIAS_THEN_MODEL,
    )
    repetition_penalty: float | None = knob(
        "Above 1.0 discourages repeats.",
        float,
        flag="--repetition-penalty",
        low=MIN_TEMPERATURE,  # logits are divided by it: below this they overflow float32 (found by fuzzing)
        default_text=ALIAS_THEN_MODEL,
    )
    stop: list[str] | None = knob("End before this string (repeatable).", list, flag="--stop")  # noqa: RUF009
    count: int | None = _count_knob()
    seed: int | None = _seed_knob()
    device: str | None = _device_knob()
    dtype: str | None = _dtype_knob()
    backend: str | None = _backend_knob(
        "text", "auto, torch (transformers, the reference) or onnx (onnxruntime-genai, CPU)."
    )
    precision: str | None = knob(
        "onnx backend: fp32 (same greedy text as torch) or int4 (faster).",
        str,
        flag="--precision",
        metavar="PRECISION",
        choices=("fp32", "int4"),
        normalize=lambda v: v.strip().lower(),
        default_text="fp32",
    )
    trust_remote_code: bool | None = knob(
        "Allow running Python code shipped in the model repository.",
        bool,
        flag="--trust-remote-code",
        in_config=False,
    )


@dataclass(frozen=True)
class ImageSettings:
    """Every knob of `aigc image`."""

    model: str | None = _model_knob("image")
    negative: str | None = knob("What the image should not show.", str, flag="--negative", in_record=True)
    steps: int | None = knob(
        "Denoising steps.",
        int,
        flag="--steps",
        low=1,
        in_record=True,
        default_text=ALIAS_THEN_MODEL,
    )
    guidance: float | None = knob(
        "Classifier-free guidance scale; 0 turns it off.",
        float,
        flag="--guidance",
        low=0.0,
        in_record=True,
        default_text=ALIAS_THEN_MODEL,
    )
    width: int | None = _size_knob("width")
    height: int | None = _size_knob("height")
    scheduler: str | None = knob(
        f"The sampler: {', '.join(SCHEDULERS)}.",
        str,
        flag="--scheduler",
        metavar="NAME",
        choices=tuple(SCHEDULERS),
        in_record=True,
        default_text="the model's",
    )
    strength: float | None = knob(
        "How far to move from --init-image, 0 to 1 (1.0 with --mask).",
        float,
        flag="--strength",
        low=0.0,
        high=1.0,
        in_config=False,
        in_record=True,
        default_text="0.75",
    )
    low_memory: bool | None = knob(
        "Attention slicing, VAE tiling, model offload on a GPU.", bool, flag="--low-memory", in_record=True
    )
    lora: list[str] | None = knob(  # noqa: RUF009
        "LoRA: a Hub repo, a .safetensors file or a folder, then :WEIGHT (-10..10, default 1); repeatable.",
        list,
        flag="--lora",
        metavar="LORA[:WEIGHT]",
        in_record=True,
        check=lora_problem,
        path=True,
    )
    vae: str | None = knob(
        "Decode with another VAE: taesd (the tiny autoencoder: fast), or a Hub repo or folder of one.",
        str,
        flag="--vae",
        metavar="VAE",
        in_record=True,
        path=True,
        default_text="the model's",
    )
    count: int | None = _count_knob()
    seed: int | None = _seed_knob()
    device: str | None = _device_knob()
    dtype: str | None = _dtype_knob()
    backend: str | None = _backend_knob(
        "image",
        "auto or torch (diffusers, the reference), or openvino (CPU; float32 unless --dtype bfloat16).",
    )
    mark: bool | None = _mark_knob()


@dataclass(frozen=True)
class SpeechSettings:
    """Every knob of `aigc speak`."""

    model: str | None = _model_knob("speech")
    voice: str | None = knob(
        "Piper speaker id or name; SpeechT5 x-vector .npy.", str, flag="--voice", metavar="VOICE", path=True
    )
    speed: float | None = knob(  # OpenAI's /v1/audio/speech range; engines.speech.SPEED_RANGE
        "Above 1 speaks faster; 0.25 to 4.", float, flag="--speed", low=0.25, high=4.0, default_text="1.0"
    )
    sentence_silence: float | None = knob(
        "Silence after each sentence.",
        float,
        flag="--sentence-silence",
        low=0.0,
        high=60.0,
        unit="seconds",
        metavar="SECONDS",
        default_text="0",
    )
    seed: int | None = _seed_knob(count=False)
    device: str | None = _device_knob()
    dtype: str | None = _dtype_knob()
    mark: bool | None = _mark_knob()


SCHEMAS: dict[str, type] = {"text": TextSettings, "image": ImageSettings, "speech": SpeechSettings}
S = TypeVar("S")


def knobs(cls: type) -> dict[str, Knob]:
    """The schema of a settings class: field name -> Knob, in field order."""
    return {f.name: f.metadata["knob"] for f in dataclasses.fields(cls)}


def config_keys(modality: str) -> list[str]:
    """The keys config.toml takes in the [modality] table."""
    return [name for name, k in knobs(SCHEMAS[modality]).items() if k.in_config]


@dataclass(frozen=True)
class Resolved(Generic[S]):
    """The settings that will run, and where each value came from."""

    values: S
    """The settings dataclass; None where nobody set a value (the model's own default applies)."""
    sources: dict[str, str] = field(default_factory=dict)
    """Field name -> "flag --seed", "environment (AIGC_DEVICE)", "config file (PATH)", "record FILE",
    "alias smollm2", "default"; absent where the value is None."""


def subject(name: str, knob_: Knob, source: str, modality: str) -> str:
    """How an error names the value: the flag the user typed, or the file, variable or record it came from."""
    if source.startswith("flag"):
        return knob_.flag or name
    if source.startswith("environment"):
        return knob_.env or name
    if source.startswith("config file"):
        return f"[{modality}] {name} in {source.removeprefix('config file (').removesuffix(')')}"
    if source.startswith("record"):
        return f"{name} in {source.removeprefix('record ')}"
    if source.startswith("request"):
        return f"field '{name}'"
    return name


def named(resolved: Resolved, name: str, modality: str) -> str:
    """How a message names setting `name`: its flag, the config.toml key, the record or API field, by where
    its value came from (settings.subject)."""
    schema = knobs(type(resolved.values))
    return subject(name, schema[name], resolved.sources.get(name, "flag"), modality)


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_value(name: str, knob_: Knob, value: Any, subject: str, coerce: bool = False) -> Any:
    """The value normalized and checked; UsageError (exit 2) naming `subject` otherwise. Strings are
    converted to numbers and booleans only when `coerce` (an environment variable is always a string;
    config.toml, records and API bodies have types of their own)."""
    kind = knob_.kind
    if coerce and not knob_.path:  # argv and the environment may hold bytes that are not UTF-8
        if isinstance(value, str):
            value = as_text(value)
        elif isinstance(value, list):
            value = [as_text(v) if isinstance(v, str) else v for v in value]
    if kind is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{subject} must be a list of strings (got {value!r})", code="invalid_type")
        for each in value:
            if each and knob_.check is not None and (problem := knob_.check(each)) is not None:
                raise UsageError(f"{subject} '{each}': {problem}")
        return [v for v in value if v]
    if kind is bool:
        if coerce and isinstance(value, str) and value.strip().lower() in TRUTH | FALSEHOOD:
            value = value.strip().lower() in TRUTH
        if not isinstance(value, bool):
            raise UsageError(f"{subject} must be true or false (got {value!r})", code="invalid_type")
        return value
    if kind in (int, float):
        if isinstance(value, str) and coerce:
            try:
                value = kind(value.strip())
            except ValueError:
                raise UsageError(
                    f"{subject} must be {'an integer' if kind is int else 'a number'} (got {value!r})"
                ) from None
        if kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON's 2.0 is the integer 2 (JSON Schema says so; OpenAI's API takes it)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (kind is int and not isinstance(value, int))
        ):
            raise UsageError(
                f"{subject} must be {'an integer' if kind is int else 'a number'} (got {value!r})",
                code="invalid_type",
            )
        value = kind(value)
        if value != value or value in (float("inf"), float("-inf")):  # NaN, infinity
            raise UsageError(f"{subject} must be a finite number (got {value})")
        if knob_.low is not None and (value < knob_.low or (knob_.low_open and value == knob_.low)):
            bound = "above" if knob_.low_open else "at least"
            raise UsageError(f"{subject} must be {bound} {_number(knob_.low)} (got {_number(value)})")
        if knob_.high is not None and value > knob_.high:
            raise UsageError(f"{subject} must be at most {_number(knob_.high)} (got {_number(value)})")
    elif not isinstance(value, str):
        raise UsageError(f"{subject} must be a string (got {value!r})", code="invalid_type")
    if knob_.normalize is not None:
        value = knob_.normalize(value)
    if kind is str and (knob_.choices or knob_.noun):
        where = "" if subject == knob_.flag else f" ({subject})"
        noun = knob_.noun or name.replace("_", " ")
        if knob_.choices and value not in knob_.choices:
            raise UsageError(f"Unknown {noun} '{value}'{where}: use one of {', '.join(knob_.choices)}")
        if knob_.check is not None and (problem := knob_.check(value)) is not None:
            raise UsageError(f"Unknown {noun} '{value}'{where}: {problem}")
    elif knob_.check is not None and (problem := knob_.check(value)) is not None:
        raise UsageError(f"{subject} {problem} (got {_number(value)})")
    return value


def resolve_settings(
    modality: str,
    flags: Mapping[str, Any],
    record: Mapping[str, Any] | None = None,
    record_name: str = "",
    alias_defaults: Callable[[str], tuple[str, Mapping[str, Any]]] | None = None,
    given_in: str = "flag",
) -> Resolved:
    """Each setting from the first source that sets it, checked, with its source.

    flags: field name -> value from the command line (None: not given), or from an API request body when
    given_in is "request" (typed as JSON types them: not coerced from strings). record: a file's aigc record
    (`--from`; only fields with in_record). alias_defaults(model name) -> (alias, defaults) gives the
    registry defaults of the model once it is known (the registry's by default). Raises UsageError
    (exit 2) naming the flag, variable, file key or record field that holds a bad value.
    """
    from .config import read_config_file

    cls = SCHEMAS[modality]
    file_values, file_path = read_config_file()
    section = file_values.get(modality, {})
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    schema = knobs(cls)
    for name, k in schema.items():
        given = f"flag {k.flag}" if given_in == "flag" else f"request field {name}"
        candidates: list[tuple[Any, str]] = [(flags.get(name), given)]
        if record is not None and k.in_record:
            candidates.append((record.get(name), f"record {record_name}"))
        if k.env:
            candidates.append((os.environ.get(k.env) or None, f"environment ({k.env})"))
        if k.in_config:
            candidates.append((section.get(name), f"config file ({file_path})"))
        # Every value present is checked, the overridden ones too: a bad line in config.toml is found
        # the first time, not the day the flag that hid it is left out.
        checked = [
            (
                check_value(
                    name, k, value, subject(name, k, source, modality), source.startswith(("flag", "env"))
                ),
                source,
            )
            for value, source in candidates
            if value is not None
        ]
        if checked:
            values[name], sources[name] = checked[0]
    if "model" not in values:
        values["model"], sources["model"] = DEFAULT_MODELS[modality], "default"
    alias, defaults = (alias_defaults or _registry_defaults)(values["model"])
    for name, value in defaults.items():
        if name in schema and values.get(name) is None:
            values[name] = check_value(name, schema[name], value, f"{name} of alias {alias}")
            sources[name] = f"alias {alias}"
    return Resolved(cls(**values), sources)


def configured(modality: str, key: str) -> tuple[Any, str]:
    """(value, source) of one setting from the environment or config.toml; (None, "") when neither sets
    it. Checked as the resolver checks it."""
    resolved = resolve_settings(modality, {}, alias_defaults=lambda model: (model, {}))
    if resolved.sources.get(key, "default") == "default":
        return None, ""
    return getattr(resolved.values, key), resolved.sources[key]


def _registry_defaults(model: str) -> tuple[str, Mapping[str, Any]]:
    spec = lookup(model)
    return (spec.name, spec.defaults) if spec is not None else (model, {})
