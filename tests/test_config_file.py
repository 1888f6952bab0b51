"""`aigc models default MODALITY NAME` edits AIGC_HOME/config.toml: any folder name is stored as TOML and read
back exactly, the user's comments and other tables survive, and a file that does not parse is never replaced.
The writer is checked in-process (run_default, as the command calls it); two real runs check the command."""

from __future__ import annotations

import os
import stat
import tomllib

import pytest

from aigc_cli.commands.models import run_default
from aigc_cli.config import write_default_model
from aigc_cli.errors import OutputError, UsageError

ODD_NAMES = ['my"model', "back\\slash", "модель 日本 ü", "x'''y", 'three"""quotes', "tab\there"]


def config(isolated):
    return isolated / "aigc-home" / "config.toml"


@pytest.mark.parametrize("folder_name", ODD_NAMES)
def test_any_folder_name_is_stored_and_shown_back_exactly(folder_name, isolated, capsys):
    folder = isolated / folder_name
    folder.mkdir()
    run_default("text", str(folder))
    path = config(isolated)
    assert capsys.readouterr().out == f"text model: {folder} (in {path})\n"
    assert tomllib.loads(path.read_text(encoding="utf-8")) == {"text": {"model": str(folder)}}
    run_default("text", None)
    assert capsys.readouterr().out == f"{folder}  (config file ({path}))\n"
    run_default(None, None)  # every modality's line: the file still reads
    assert f"text    {folder}  (config file ({path}))\n" in capsys.readouterr().out


def test_comments_other_tables_and_layout_survive(isolated, capsys):
    path = config(isolated)
    path.parent.mkdir(parents=True)
    before = (
        "# my settings\n"
        "[image]  # pictures\n"
        "steps = 4   # fast\n"
        "\n"
        "[text]\n"
        "# which model\n"
        'model = "gpt2"  # for now\n'
        "max_tokens = 5\n"
    )
    path.write_text(before)
    path.chmod(0o600)
    folder = isolated / 'my"model'
    folder.mkdir()
    run_default("text", str(folder))
    quoted = str(folder).replace('"', '\\"')
    after = before.replace('model = "gpt2"', f'model = "{quoted}"')
    assert path.read_text() == after
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # a private file stays private
    # A table the file lacks is added at the end; the rest is untouched.
    write_default_model("speech", "joe")
    assert path.read_text() == after + '\n[speech]\nmodel = "joe"\n'
    assert not [p for p in path.parent.iterdir() if p.name != "config.toml"]  # no temp file left


def test_a_linked_config_stays_a_link(isolated, tmp_path):
    dotfiles = tmp_path / "dotfiles" / "aigc.toml"
    dotfiles.parent.mkdir()
    dotfiles.write_text("# mine\n[text]\nmax_tokens = 5\n")
    path = config(isolated)
    path.parent.mkdir(parents=True)
    path.symlink_to(dotfiles)
    write_default_model("text", "gpt2")
    assert path.is_symlink()
    assert dotfiles.read_text() == '# mine\n[text]\nmax_tokens = 5\nmodel = "gpt2"\n'


def test_a_name_toml_cannot_hold_leaves_the_file(isolated):
    path = config(isolated)
    path.parent.mkdir(parents=True)
    path.write_text("[text]\nmax_tokens = 5\n")
    name = os.fsdecode(b"/models/caf\xe9")  # a Latin-1 folder name, as argv gives it
    with pytest.raises(UsageError) as caught:
        write_default_model("text", name)
    assert caught.value.message == (
        f"'/models/caf\ufffd' cannot be kept in {path}: it holds bytes that are not UTF-8, and a TOML file "
        "is UTF-8 text; rename the folder, or set AIGC_TEXT_MODEL instead"
    )
    assert path.read_text() == "[text]\nmax_tokens = 5\n"


def test_an_edit_that_would_not_read_back_leaves_the_file(isolated, monkeypatch):
    import tomlkit

    path = config(isolated)
    path.parent.mkdir(parents=True)
    path.write_text("[text]\nmax_tokens = 5\n")
    monkeypatch.setattr(tomlkit, "dumps", lambda document: '[text]\nmodel = "something else"\n')
    with pytest.raises(OutputError) as caught:
        write_default_model("text", "gpt2")
    assert caught.value.message == (
        f"Cannot set the text model in {path}: the new text would not read back model = 'gpt2'; "
        "the file is as it was; edit it by hand, or set AIGC_TEXT_MODEL instead"
    )
    assert path.read_text() == "[text]\nmax_tokens = 5\n"


def test_the_command_stores_a_quote_and_every_command_still_runs(aigc, isolated):
    folder = isolated / 'my"model'
    folder.mkdir()
    path = config(isolated)
    assert aigc("models", "default", "text", str(folder)).stdout.decode() == (
        f"text model: {folder} (in {path})\n"
    )
    listed = aigc("models", "default")
    assert listed.returncode == 0, listed.stderr.decode()
    assert f"text    {folder}  (config file ({path}))\n" in listed.stdout.decode()


def test_a_file_that_does_not_parse_is_not_replaced(aigc, isolated):
    path = config(isolated)
    path.parent.mkdir(parents=True)
    before = b'# mine\n[image]\nsteps = 4\n[text]\nmodel = "/data/models/my"model"\n'
    path.write_bytes(before)
    folder = isolated / "good"
    folder.mkdir()
    result = aigc("models", "default", "text", str(folder))
    assert result.returncode == 2 and result.stdout == b""
    assert result.stderr.decode() == (
        f"aigc: error: {path}: Expected newline or end of document after a statement "
        "(at line 5, column 26): fix that line, or move the file away to start afresh\n"
    )
    assert path.read_bytes() == before
