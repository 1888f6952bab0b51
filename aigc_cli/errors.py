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

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class GenerationError(AigcError):
    exit_code = ExitCode.FAILURE


class UsageError(AigcError):
    exit_code = ExitCode.USAGE


class ModelUnavailableError(AigcError):
    """Unknown name, wrong modality, not cached while offline, not a model at all."""

    exit_code = ExitCode.MODEL_UNAVAILABLE


class UnknownModelError(ModelUnavailableError):
    pass


class WrongModalityError(ModelUnavailableError):
    pass


class ModelNotCachedError(ModelUnavailableError):
    pass


class OutputError(AigcError):
    exit_code = ExitCode.OUTPUT


class PipeClosed(Exception):
    """The reader of stdout went away (`aigc text ... | head`): stop quietly, exit 0."""


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


# (exception class name, substring of the message or "", error class, message template).
# Matched by name so that this module never imports a heavy library; first match wins.
LIBRARY_ERRORS: list[tuple[str, str, type[AigcError], str]] = [
    (
        "GatedRepoError",
        "",
        ModelUnavailableError,
        "The model is gated: accept its license on its Hugging Face page, then log in (`hf auth login`)",
    ),
    (
        "RepositoryNotFoundError",
        "",
        ModelUnavailableError,
        "No such model on the Hugging Face Hub (or it is private: log in with `hf auth login`)",
    ),
    (
        "RevisionNotFoundError",
        "",
        ModelUnavailableError,
        "No such revision of the model on the Hugging Face Hub",
    ),
    (
        "LocalEntryNotFoundError",
        "",
        ModelNotCachedError,
        "A file of the model is not in the local cache and the Hub cannot be reached: "
        "run `aigc models pull MODEL` while online",
    ),
    (
        "OfflineModeIsEnabled",
        "",
        ModelNotCachedError,
        "The model is not cached and offline mode is on: run `aigc models pull MODEL` while online",
    ),
    (
        "OutOfMemoryError",
        "",
        GenerationError,
        "Out of memory on the device: try a smaller model, --dtype float16, or --device cpu",
    ),
    (
        "OSError",
        "does not appear to have a file named",
        ModelUnavailableError,
        "The model folder is missing files ({detail}); run `aigc models pull MODEL` to complete it",
    ),
]


def map_exception(exc: BaseException, model: str | None = None) -> AigcError | None:
    """Turn a known library exception into an AigcError with a remedy; None when it is not known."""
    names = _class_names(exc)
    text = str(exc)
    for class_name, needle, error_class, template in LIBRARY_ERRORS:
        if class_name in names and needle in text:
            detail = text.strip().splitlines()[0] if text.strip() else class_name
            message = template.replace("MODEL", model or "MODEL").format(detail=detail[:200])
            return error_class(message)
    return None
