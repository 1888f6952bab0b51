"""Speech over any speech engine: `synthesize` yields audio sentence by sentence, `synthesize_all`
collects it. Nothing here prints. The engines: speech_piper.py (Piper voices) and speech_transformers.py
(the transformers text-to-speech pipeline).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import UsageError

if TYPE_CHECKING:
    from .base import SpeechEngine

MAX_SENTENCE_CHARS = 300
SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n\s*\n|\n(?=\s*[-*\u2022])")
SPEED_RANGE = (0.25, 4.0)
"""The speeds a voice may be asked for, OpenAI's /v1/audio/speech range (the schema's `speed` says the same):
outside it a Piper voice allocates gigabytes (1e-6) or says nothing intelligible."""

_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")  # a terminal's colour/cursor code (`grep --color=always`)
_BREAKS = "\x0b\x0c\x1c\x1d\x1e\x85"  # controls that str.splitlines takes for line breaks
_SEPARATORS = "\x00\x1f"  # NUL (`find -print0`) and the unit separator part words
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0 but \t \n \r, DEL, C1
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_UTF16_MARKS = ("\udcff\udcfe", "\udcfe\udcff")  # FF FE / FE FF read with errors="surrogateescape"
_UTF16_MARKS_LOST = ("\ufffd\ufffd", "\xff\xfe", "\xfe\xff")  # ... with errors="replace", as Latin-1


@dataclass(frozen=True)
class SpeechRequest:
    text: str
    seed: int
    voice: str | None = None
    """Speaker: a Piper speaker id or name, a SpeechT5 x-vector (.npy), a Bark preset."""
    speed: float = 1.0
    """> 1 speaks faster."""
    sentence_silence: float = 0.0
    """Seconds of silence after each sentence."""


@dataclass(frozen=True)
class AudioChunk:
    samples: Any
    """float32 mono samples in [-1, 1]."""
    sample_rate: int
    index: int
    """The sentence's position."""
    seconds: float
    """Compute time for this chunk."""


def _names(chars: str, most: int = 4) -> str:
    shown = list(dict.fromkeys(chars))
    names = ["NUL" if c == "\x00" else f"U+{ord(c):04X}" for c in shown[:most]]
    return ", ".join(names) + (", ..." if len(shown) > most else "")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _iconv(encoding: str) -> str:
    return f"iconv -f {encoding} -t UTF-8"


def _utf16_evidence(text: str) -> tuple[str, str] | None:
    """The encoding (UTF-16 or UTF-32) `text` looks like, read as UTF-8 (aigc's stdin: errors="replace"),
    and why; or None. Each byte that is not UTF-8 becomes one character, so the NUL high bytes of Latin
    letters keep their places: NULs between the letters, all at even or all at odd positions."""
    if text.startswith(_UTF16_MARKS):
        return "UTF-16", "it starts with a UTF-16 byte-order mark"
    nuls = text.count("\x00")
    if not nuls:
        return None
    encoding = "UTF-32" if nuls * 3 > len(text) * 2 else "UTF-16"  # 3 NULs to a Latin letter
    odd = sum(1 for match in re.finditer("\x00", text) if match.start() % 2)
    if nuls * 4 >= len(text) or (nuls >= 8 and max(odd, nuls - odd) >= 0.9 * nuls):
        return encoding, "NUL characters between its letters"
    if text.startswith(_UTF16_MARKS_LOST):
        return encoding, "it starts with a UTF-16 byte-order mark and holds NUL characters"
    return None


def clean_text(text: str) -> tuple[str, str | None]:
    """The text a voice can read, and what was taken out of it (for a notice), or None when nothing was.

    Removed: terminal escape codes, C0 and C1 control characters and DEL, lone surrogates, and U+FEFF
    (a byte-order mark at the start silently: it says how the file was encoded, nothing more). NUL and
    U+001F become spaces (they separate words, as `find -print0` does); the controls Python takes for line
    breaks (VT, FF, FS, GS, RS, NEL) become newlines, and \\r\\n and \\r become \\n, so that
    `split_sentences` sees lines and paragraphs. Tabs and newlines stay. A surrogate pair spelled as two
    code points becomes its one character.

    Raises UsageError (exit 2) for a text that looks like UTF-16 (or UTF-32) read as UTF-8, saying how to
    convert it, and for one with nothing left to read.
    """
    evidence = _utf16_evidence(text)
    if evidence is not None:
        encoding, why = evidence
        raise UsageError(
            f"The text looks like {encoding} ({why}): convert it to UTF-8 first: {_iconv(encoding)}"
        )
    if _SURROGATE.search(text):  # join pairs written as two code points; lone halves stay, for removal
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    removed: list[str] = []
    text, escapes = _ESCAPE.subn("", text)
    if escapes:
        removed.append(_count(escapes, "terminal escape code"))
    controls = "".join(_CONTROL.findall(text))
    if controls:
        removed.append(f"{_count(len(controls), 'control character')} ({_names(controls)})")
        text = _CONTROL.sub(lambda m: " " if m[0] in _SEPARATORS else "\n" if m[0] in _BREAKS else "", text)
    surrogates = "".join(_SURROGATE.findall(text))
    if surrogates:
        removed.append(f"{_count(len(surrogates), 'lone surrogate')} ({_names(surrogates)})")
        text = _SURROGATE.sub("", text)
    marks = text.count("\ufeff")
    if marks:
        removed.append(f"{_count(marks, 'byte-order mark')} (U+FEFF)")
        text = text.replace("\ufeff", "")
    if not text.strip():
        held = ": it holds only control characters" if removed else ""
        if "\x00" in controls:
            held += f", NULs among them: if it is UTF-16, convert it first: {_iconv('UTF-16')}"
        raise UsageError(f"The text has nothing to read{held}")
    if not removed:
        return text, None
    listed = removed[0] if len(removed) == 1 else ", ".join(removed[:-1]) + " and " + removed[-1]
    return text, f"removed {listed}"


def check_input(request: SpeechRequest) -> None:
    """What every speech engine refuses before any work (their `check` calls it): a speed outside
    SPEED_RANGE, a text `clean_text` refuses, and one still holding NULs or lone surrogates, which Piper
    fails on (the caller cleans the text first). Raises UsageError naming the value and its bounds."""
    low, high = SPEED_RANGE
    if not low <= request.speed <= high:  # NaN too
        raise UsageError(f"speed must be from {low:g} to {high:g} (got {request.speed:g})")
    clean_text(request.text)
    unreadable = "".join(re.findall(r"[\x00\ud800-\udfff]", request.text))
    if unreadable:
        raise UsageError(
            f"The text holds {_count(len(unreadable), 'character')} a voice cannot read "
            f"({_names(unreadable)}): remove {'it' if len(unreadable) == 1 else 'them'}"
        )
    if not any(c.isalnum() for c in request.text):  # "...", "!?": no voice says anything (a 0-sample file)
        shown = request.text.strip()[:40]
        raise UsageError(f"Nothing to say in '{shown}': the text has no letters or digits", param="input")


def split_sentences(text: str, limit: int = MAX_SENTENCE_CHARS) -> list[str]:
    """Sentences in order; a sentence longer than `limit` is cut at commas, then at spaces (`split_long`)."""
    pieces: list[str] = []
    for sentence in SENTENCE_END.split(text):
        pieces.extend(split_long(" ".join(sentence.split()), limit))
    return pieces


Words = TypeVar("Words", str, list[str])


def split_long(sentence: Words, limit: int = MAX_SENTENCE_CHARS, marks: str = ",;") -> list[Words]:
    """`sentence` in pieces of at most `limit` characters, so that a long text without full stops is still
    spoken (and streamed) a bounded piece at a time: cut after the last comma or semicolon (one of `marks`)
    followed by a space, where that leaves the piece more than a third of `limit`, else at the last space,
    else at `limit`. The sentence is a string, or a Piper voice's phonemes (a list of one-character strings,
    words apart by " "); the pieces lose their spaces at either end. A sentence within `limit` is the one
    piece, as it is."""
    pieces: list[Words] = []
    while len(sentence) > limit:
        clause = max(
            (i for i in range(limit - 1) if sentence[i] in marks and sentence[i + 1] == " "), default=-1
        )
        if clause > limit // 3:
            cut = clause + 1
        else:
            cut = max((i for i in range(limit) if sentence[i] == " "), default=-1)
            cut = cut if cut > 0 else limit
        piece, sentence = _strip(sentence[:cut]), _strip(sentence[cut:])
        if piece:
            pieces.append(piece)
    if sentence:
        pieces.append(sentence)
    return pieces


def _strip(words: Words) -> Words:
    if isinstance(words, str):
        return words.strip()
    start, end = 0, len(words)
    while start < end and words[start] == " ":
        start += 1
    while end > start and words[end - 1] == " ":
        end -= 1
    return words[start:end]


def synthesize(voice: SpeechEngine, request: SpeechRequest) -> Iterator[AudioChunk]:
    """Audio chunks in order, one per sentence, silence appended as asked."""
    import numpy as np

    silence = np.zeros(round(request.sentence_silence * voice.sample_rate), dtype=np.float32)
    started = time.perf_counter()
    for index, samples in enumerate(voice.chunks(request)):
        samples = np.asarray(samples, dtype=np.float32)
        if silence.size:
            samples = np.concatenate([samples, silence])
        now = time.perf_counter()
        yield AudioChunk(samples, voice.sample_rate, index, round(now - started, 4))
        started = time.perf_counter()


def synthesize_all(voice: SpeechEngine, request: SpeechRequest) -> tuple[Any, float]:
    """All samples joined, and the compute seconds."""
    import numpy as np

    chunks = list(synthesize(voice, request))
    samples = np.concatenate([c.samples for c in chunks]) if chunks else np.zeros(0, dtype=np.float32)
    return samples, sum(c.seconds for c in chunks)
