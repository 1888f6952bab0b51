"""The `aigc` command line: parse flags into a request, run a generator, write the payload.

This module imports nothing heavy: `aigc --help` must not import torch.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from typing import Annotated

import typer

from . import __version__
from .config import go_offline, settings
from .console import Console, error_line
from .errors import AigcError, ExitCode, PipeClosed, map_exception

app = typer.Typer(
    name="aigc",
    help="Generate text, images and speech from pretrained Hugging Face models, in shell pipelines.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
models_app = typer.Typer(
    help="List, pull, locate and remove models (the Hugging Face cache); set default models.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")

# One flag vocabulary across commands.
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "-m",
        "--model",
        help="Alias, Hub repo id or local folder [default: AIGC_<MODALITY>_MODEL or the alias default].",
    ),
]
CountOpt = Annotated[int, typer.Option("-n", "--count", min=1, help="How many results; item i uses seed+i.")]
SeedOpt = Annotated[
    int | None,
    typer.Option("--seed", min=0, max=2**32 - 1, help="Seed; drawn at random and reported when not given."),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", envvar="AIGC_DEVICE", help="auto, cpu, cuda, cuda:N, mps or xpu.")
]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto, float32, float16 or bfloat16.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON line per result on stdout.")]
QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="Nothing on stderr but errors.")]
VerboseOpt = Annotated[
    bool, typer.Option("-v", "--verbose", help="Notes on stderr even when it is not a terminal.")
]
OfflineOpt = Annotated[
    bool, typer.Option("--offline", help="Never touch the network (same as HF_HUB_OFFLINE=1).")
]
TrustOpt = Annotated[
    bool,
    typer.Option("--trust-remote-code", help="Allow running Python code shipped in the model repository."),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"aigc {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Generate text, images and speech from pretrained Hugging Face models, in shell pipelines."""


@app.command()
def text(
    prompt: Annotated[
        str | None, typer.Argument(help="The prompt; '-' or a piped stdin is read first.")
    ] = None,
    model: ModelOpt = None,
    system: Annotated[str | None, typer.Option("--system", help="System message (chat models).")] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Send the prompt as it is, without the chat template.")
    ] = False,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="Most new tokens.")] = None,
    temperature: Annotated[
        float | None, typer.Option("--temperature", min=0.0, help="0 means greedy [default: the model's].")
    ] = None,
    top_k: Annotated[
        int | None, typer.Option("--top-k", min=0, help="Sample from the k likeliest tokens.")
    ] = None,
    top_p: Annotated[
        float | None, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling mass.")
    ] = None,
    repetition_penalty: Annotated[
        float | None, typer.Option("--repetition-penalty", min=0.0, help="Above 1.0 discourages repeats.")
    ] = None,
    stop: Annotated[
        list[str] | None, typer.Option("--stop", help="End before this string (repeatable).")
    ] = None,
    count: CountOpt = 1,
    seed: SeedOpt = None,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Print tokens as they come.")] = True,
    json_out: JsonOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    offline: OfflineOpt = False,
    trust_remote_code: TrustOpt = False,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            help="auto, torch (transformers, the reference) or onnx (onnxruntime-genai, CPU) [auto].",
        ),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option("--precision", help="onnx backend: fp32 (same greedy text as torch) or int4 (faster)."),
    ] = None,
) -> None:
    """Generate text with a causal language model; tokens stream to stdout."""
    from .commands.text import TextOptions, run_text

    if offline:
        go_offline()
    run_text(
        TextOptions(
            prompt=prompt,
            model=model,
            system=system,
            raw=raw,
            max_tokens=max_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            stop=tuple(s for s in stop or () if s),
            count=count,
            seed=seed,
            stream=stream,
            json=json_out,
            device=device,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            backend=backend,
            precision=precision,
        ),
        Console(quiet=quiet, verbose=verbose),
    )


@app.command()
def image(
    prompt: Annotated[
        str | None, typer.Argument(help="The prompt; '-' or a piped stdin is read first.")
    ] = None,
    model: ModelOpt = None,
    out: Annotated[
        str | None,
        typer.Option("-o", "--out", help="PNG, JPEG or WebP by extension; '-' for PNG on stdout."),
    ] = None,
    negative: Annotated[
        str | None, typer.Option("--negative", help="What the image should not show.")
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", min=1, help="Denoising steps.")] = None,
    guidance: Annotated[
        float | None, typer.Option("--guidance", min=0.0, help="CFG scale; 0 turns it off.")
    ] = None,
    width: Annotated[int | None, typer.Option("--width", help="Pixels, a multiple of 8.")] = None,
    height: Annotated[int | None, typer.Option("--height", help="Pixels, a multiple of 8.")] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            help="euler, euler-a, heun, lms, dpm++, dpm++-karras, dpm++-sde, ddim, pndm, unipc, lcm.",
        ),
    ] = None,
    init_image: Annotated[
        str | None, typer.Option("--init-image", help="Start from this image (a path, or '-' for stdin).")
    ] = None,
    strength: Annotated[
        float | None,
        typer.Option("--strength", min=0.0, max=1.0, help="How far to move from --init-image [0.75]."),
    ] = None,
    low_memory: Annotated[
        bool, typer.Option("--low-memory", help="Attention slicing, VAE tiling, model offload on a GPU.")
    ] = False,
    from_file: Annotated[
        str | None, typer.Option("--from", help="Make the image a file records again; flags override.")
    ] = None,
    count: CountOpt = 1,
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    offline: OfflineOpt = False,
) -> None:
    """Generate images with a Stable Diffusion pipeline; every image records how it was made."""
    from .commands.image import ImageOptions, run_image

    if offline:
        go_offline()
    run_image(
        ImageOptions(
            prompt=prompt,
            model=model,
            negative=negative,
            steps=steps,
            guidance=guidance,
            width=width,
            height=height,
            seed=seed,
            count=count,
            scheduler=scheduler,
            init_image=init_image,
            strength=strength,
            low_memory=low_memory,
            out=out,
            json=json_out,
            device=device,
            dtype=dtype,
            from_file=from_file,
        ),
        Console(quiet=quiet, verbose=verbose),
    )


@app.command()
def speak(
    prompt: Annotated[
        str | None, typer.Argument(help="The text; '-' or a piped stdin is read first.")
    ] = None,
    model: ModelOpt = None,
    out: Annotated[
        str | None, typer.Option("-o", "--out", help="WAV, FLAC or OGG by extension; '-' for stdout.")
    ] = None,
    audio_format: Annotated[
        str | None,
        typer.Option("--format", help="wav, flac, ogg, or raw (16-bit PCM streamed per sentence)."),
    ] = None,
    voice: Annotated[
        str | None, typer.Option("--voice", help="Piper speaker id or name; SpeechT5 x-vector .npy.")
    ] = None,
    speed: Annotated[float, typer.Option("--speed", help="Above 1 speaks faster.")] = 1.0,
    sentence_silence: Annotated[
        float, typer.Option("--sentence-silence", min=0.0, help="Seconds of silence after each sentence.")
    ] = 0.0,
    play: Annotated[
        bool, typer.Option("--play", help="Play it with ffplay, aplay, paplay or afplay.")
    ] = False,
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    offline: OfflineOpt = False,
) -> None:
    """Speak text with a Piper voice or a transformers TTS model; long text is read sentence by sentence."""
    from .commands.speak import SpeakOptions, run_speak

    if offline:
        go_offline()
    run_speak(
        SpeakOptions(
            prompt=prompt,
            model=model,
            out=out,
            format=audio_format,
            voice=voice,
            speed=speed,
            sentence_silence=sentence_silence,
            seed=seed,
            play=play,
            json=json_out,
            device=device,
            dtype=dtype,
        ),
        Console(quiet=quiet, verbose=verbose),
    )


@app.command()
def info(
    file: Annotated[str, typer.Argument(help="An image or audio file aigc made.")],
    json_out: JsonOpt = False,
) -> None:
    """Print what a generated file records: prompt, model, seed, settings."""
    from .commands.info import run_info

    run_info(file, json_out)


@app.command()
def doctor(
    json_out: JsonOpt = False,
    device: DeviceOpt = "auto",
    offline: OfflineOpt = False,
) -> None:
    """Show devices and the choice `auto` makes, versions, cache folders, offline state, embedded models."""
    from .commands.doctor import run_doctor

    if offline:
        go_offline()
    run_doctor(device, json_out)


@models_app.command("list")
def models_list(
    json_out: JsonOpt = False,
    modality: Annotated[str | None, typer.Option("--modality", help="text, image or speech.")] = None,
) -> None:
    """Every alias (source, license, offline or not, size), then the other models in the HF cache."""
    from .commands.models import run_list

    run_list(modality, json_out)


@models_app.command("pull")
def models_pull(
    names: Annotated[list[str], typer.Argument(help="Aliases or Hub repo ids.")],
    quiet: QuietOpt = False,
) -> None:
    """Download models into the Hugging Face cache (only the files the pipeline needs)."""
    from .commands.models import run_pull

    run_pull(names, Console(quiet=quiet))


@models_app.command("rm")
def models_rm(
    name: Annotated[str, typer.Argument(help="Alias or Hub repo id.")],
    yes: Annotated[bool, typer.Option("-y", "--yes", help="Do not ask (needed without a terminal).")] = False,
) -> None:
    """Remove a model from the Hugging Face cache (the embedded model: its conversion and exports)."""
    from .commands.models import run_rm

    run_rm(name, yes)


@models_app.command("default")
def models_default(
    modality: Annotated[str | None, typer.Argument(help="text, image or speech.")] = None,
    name: Annotated[
        str | None, typer.Argument(help="The model to make the default (in config.toml).")
    ] = None,
) -> None:
    """Show the default model per modality and where it is set, or set one in AIGC_HOME/config.toml."""
    from .commands.models import run_default

    run_default(modality, name)


@models_app.command("path")
def models_path(
    name: Annotated[str, typer.Argument(help="Alias, Hub repo id or folder.")],
) -> None:
    """Print the local folder that holds a model (exit 3 when it is not available offline)."""
    from .commands.models import run_path

    run_path(name)


def _usage_line(exc: typer.TyperException) -> str:
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return f"{exc.format_message()}{hint}"


def main() -> None:
    """Entry point: known failures become one stderr line and an exit code; AIGC_DEBUG=1 shows tracebacks."""
    from typer.main import get_command

    debug = settings().debug
    try:
        code = get_command(app).main(args=sys.argv[1:], prog_name="aigc", standalone_mode=False)
    except typer.TyperException as exc:  # usage errors from the parser (bad flag, bad value)
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(exc.format_message(), err=True)
        else:
            error_line(_usage_line(exc))
        code = getattr(exc, "exit_code", ExitCode.USAGE)
    except AigcError as exc:
        if debug:
            traceback.print_exc()
        error_line(exc.message)
        code = exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        code = ExitCode.INTERRUPTED
    except (PipeClosed, BrokenPipeError):
        # The reader closed the pipe (`aigc text ... | head`): that is its choice, not a failure.
        from .streams import silence_stdout

        silence_stdout()
        code = ExitCode.OK
    except Exception as exc:
        if debug:
            traceback.print_exc()
        mapped = map_exception(exc)
        if mapped is not None:
            error_line(mapped.message)
            code = mapped.exit_code
        else:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            error_line(f"{type(exc).__name__}: {first} (AIGC_DEBUG=1 shows the traceback)")
            code = ExitCode.FAILURE
    if code == ExitCode.INTERRUPTED:  # Ctrl-C, caught here or turned into Exit(130) by Typer
        error_line("interrupted")
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                stream.flush()
        os._exit(int(code))  # a generation thread may still be running: do not wait for it
    sys.exit(int(code) if isinstance(code, int) else 0)
