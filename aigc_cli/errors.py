"""Exit codes, the AigcError tree, and the one table that turns library exceptions into messages."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    MODEL_UNAVAILABLE = 3
    OUTPUT = 4
    INTERRUPTED = 130


class AigcError(Exception):
    """An error with a one-line message for the user and the exit code it maps to."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, model: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.model = model
        """The model the failure concerns, when there is one."""


class GenerationError(AigcError):
    exit_code = ExitCode.FAILURE


class Interrupted(AigcError):
    """Ctrl-C, caught where there is more to say than `interrupted` (what got done, how to go on): the
    message is the one line the entry point prints, exit 130."""

    exit_code = ExitCode.INTERRUPTED


class UsageError(AigcError):
    """Bad input: a flag, a config key, a record field, an API body field. `param` names the API field
    (or its path, `messages[2].content`) when the input came in a request, and `code` is OpenAI's error
    code for the kind of problem (invalid_value, invalid_type, unknown_parameter, ...), as the server
    answers them."""

    exit_code = ExitCode.USAGE
    code: str | None = None

    def __init__(
        self, message: str, model: str | None = None, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message, model)
        self.param = param
        if code is not None:
            self.code = code


class ContextFull(UsageError):
    """The prompt (a conversation) fills the model's context: chat drops its oldest turns on this."""

    code = "context_length_exceeded"
    """OpenAI's error code for it, which the server answers with and the client maps back."""


class ModelUnavailableError(AigcError):
    """Unknown name, wrong modality, not cached while offline, not a model at all."""

    exit_code = ExitCode.MODEL_UNAVAILABLE


class UnknownModelError(ModelUnavailableError):
    pass


class WrongModalityError(ModelUnavailableError):
    """A model of another modality than the one asked for. `found`: the modality it is (text, image,
    speech), when it is one aigc runs; the server names the route that serves it."""

    def __init__(self, message: str, model: str | None = None, found: str | None = None) -> None:
        super().__init__(message, model)
        self.found = found


class ModelNotCachedError(ModelUnavailableError):
    pass


class OutputError(AigcError):
    exit_code = ExitCode.OUTPUT


class PipeClosed(Exception):
    """The reader of stdout went away (`aigc text ... | head`): stop quietly, exit 0."""


# (module, class name, error class, message). Matched by type (isinstance, subclasses included) against the
# classes of libraries already imported: an exception of a library that was never imported cannot occur,
# and this module imports nothing heavy. {model} is the model's name, {detail} the library's first line.
LIBRARY_ERRORS: list[tuple[str, str, type[AigcError], str]] = [
    (
        "huggingface_hub.errors",
        "GatedRepoError",
        ModelUnavailableError,
        "'{model}' is gated: accept its license on its Hugging Face page, then log in (`hf auth login`)",
    ),
    (
        "huggingface_hub.errors",
        "RepositoryNotFoundError",
        ModelUnavailableError,
        "No model '{model}' on the Hugging Face Hub (or it is private: log in with `hf auth login`)",
    ),
    (
        "huggingface_hub.errors",
        "RevisionNotFoundError",
        ModelUnavailableError,
        "No such revision of '{model}' on the Hugging Face Hub",
    ),
    (
        "huggingface_hub.errors",
        "OfflineModeIsEnabled",
        ModelNotCachedError,
        "'{model}' is not cached and offline mode is on: run `aigc models pull {model}` while online",
    ),
    (
        "huggingface_hub.errors",
        "LocalEntryNotFoundError",
        ModelNotCachedError,
        "A file of '{model}' is not in the local cache and the Hub cannot be reached: "
        "run `aigc models pull {model}` while online",
    ),
    (
        "torch",
        "OutOfMemoryError",
        GenerationError,
        "Out of memory on the device running '{model}': try a smaller model, --dtype float16 or --device cpu",
    ),
    (
        "safetensors",
        "SafetensorError",
        ModelUnavailableError,
        "The weights of '{model}' are damaged ({detail}): pull it again with `aigc models pull {model}`",
    ),
]


def map_exception(exc: BaseException, model: str | None = None) -> AigcError | None:
    """Turn a known library exception into an AigcError naming the model and the remedy; None otherwise."""
    import sys

    for module_name, class_name, error_class, template in LIBRARY_ERRORS:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if isinstance(cls, type) and isinstance(exc, cls):
            text = str(exc).strip()
            detail = text.splitlines()[0][:200] if text else class_name
            message = template.format(model=model or "the model", detail=detail)
            if model is None:  # no name to put in a command: say what to run instead
                message = message.replace("`aigc models pull the model`", "`aigc models pull NAME`")
            error = error_class(message)
            error.model = model
            return error
    return None


def failure_of(exc: BaseException, model: str | None = None) -> AigcError:
    """An exception from a generation as the AigcError its caller is told (an HTTP client, a batch line, an
    MCP tool result): aigc's own as it is, a known library error named after `model` (map_exception), else
    a GenerationError (exit 1, HTTP 500) with the exception's first line."""
    if isinstance(exc, AigcError):
        return exc
    mapped = map_exception(exc, model)
    if mapped is not None:
        return mapped
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return GenerationError(f"{type(exc).__name__}: {first}", model)
