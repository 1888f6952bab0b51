"""The log: every generation, from every command, a row in AIGC_HOME/logs.db (SQLite, WAL).

A row holds what ran and what came out: time, command, modality, model and its source, prompt and system
message, every setting that ran with its seed (the record a file or `--json` carries), the output (text;
for a file its path, size and SHA-256), backend, device, dtype, seconds, the conversation, and a status
(`interrupted` for a chat reply stopped with Ctrl-C, whose output is the text up to there; else empty).
Since every run records its seed, `aigc logs rerun ID` makes the same output again.

Logging never fails a generation: a log that cannot be written (a read-only home, a full disk, a damaged
file) is one warning on stderr, and the run's exit code stays what it was. Many processes may log at once
(WAL, a busy timeout). The schema has a version (PRAGMA user_version) and migrates forward.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from .config import settings
from .loading import revision_of

MIGRATIONS = [
    # 1: generations, and full-text search over prompts and outputs.
    """
    CREATE TABLE generations (
        id INTEGER PRIMARY KEY,
        time TEXT NOT NULL,
        command TEXT NOT NULL,
        modality TEXT NOT NULL,
        model TEXT,
        source TEXT,
        prompt TEXT,
        system TEXT,
        messages TEXT,
        settings TEXT NOT NULL,
        seed INTEGER,
        output TEXT,
        path TEXT,
        size INTEGER,
        sha256 TEXT,
        backend TEXT,
        device TEXT,
        dtype TEXT,
        seconds REAL,
        conversation TEXT,
        turn INTEGER
    );
    CREATE INDEX generations_conversation ON generations (conversation, turn);
    CREATE VIRTUAL TABLE generations_fts USING fts5(
        prompt, output, content='generations', content_rowid='id'
    );
    CREATE TRIGGER generations_ai AFTER INSERT ON generations BEGIN
        INSERT INTO generations_fts (rowid, prompt, output) VALUES (new.id, new.prompt, new.output);
    END;
    CREATE TRIGGER generations_ad AFTER DELETE ON generations BEGIN
        INSERT INTO generations_fts (generations_fts, rowid, prompt, output)
        VALUES ('delete', old.id, old.prompt, old.output);
    END;
    """,
    # 2: the revision (the Hub commit) of the model that ran.
    "ALTER TABLE generations ADD COLUMN revision TEXT;",
    # 3: how the generation ended: NULL when it finished, 'interrupted' for a chat reply stopped by Ctrl-C
    # (its output is the text up to there).
    "ALTER TABLE generations ADD COLUMN status TEXT;",
]
COLUMNS = (
    *("time", "command", "modality", "model", "source", "prompt", "system", "messages", "settings", "seed"),
    *("output", "path", "size", "sha256", "backend", "device", "dtype", "seconds", "conversation", "turn"),
    *("revision", "status"),
)


def log_path() -> Path:
    return settings().home / "logs.db"


def off_marker() -> Path:
    return settings().home / "logs-off"


def enabled() -> bool:
    """`aigc logs off` turns logging off for every later run (a marker file beside the log)."""
    return not off_marker().exists()


def connect(path: Path | None = None) -> sqlite3.Connection:
    """The log, created readable by its owner only, migrated to the newest schema."""
    path = path or log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA busy_timeout = 30000")
    if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        db.execute("PRAGMA journal_mode = WAL")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version < len(MIGRATIONS):
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in _statements(script):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return db


def _statements(script: str) -> Iterator[str]:
    """The statements of a migration script (sqlite3's executescript would commit on its own)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                yield buffer.strip()
            buffer = ""


def new_conversation() -> str:
    return uuid.uuid4().hex[:12]


def file_facts(path: Path | None) -> dict[str, Any]:
    """path (absolute), size in bytes and SHA-256 of a file written, for its log row."""
    if path is None or not path.is_file():
        return {}
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"path": str(path.resolve()), "size": path.stat().st_size, "sha256": digest}


def data_facts(data: bytes | None) -> dict[str, Any]:
    """size in bytes and SHA-256 of an output that was not written here (a server's answer), for its row."""
    if data is None:
        return {}
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


_WARNED = False


def record_entry(entry: dict[str, Any], no_log: bool = False) -> int | None:
    """Add a generation to the log; its id, or None when logging is off or failed (then one warning on
    stderr, once per process; the generation is not affected)."""
    global _WARNED
    if no_log or not enabled():
        return None
    row = {name: entry.get(name) for name in COLUMNS}
    row["time"] = row["time"] or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for name in ("settings", "messages"):
        if row[name] is not None and not isinstance(row[name], str):
            row[name] = json.dumps(row[name], ensure_ascii=False)
    try:
        with closing(connect()) as db:
            cursor = db.execute(
                f"INSERT INTO generations ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                [row[name] for name in COLUMNS],
            )
            return cursor.lastrowid
    except (sqlite3.Error, OSError) as exc:
        if not _WARNED:
            _WARNED = True
            from .console import Console

            why = getattr(exc, "strerror", None) or str(exc)
            Console().warn(f"the log ({log_path()}) cannot be written ({why}): this run is not logged")
        return None


@contextmanager
def reading() -> Iterator[sqlite3.Connection]:
    """The log for reading (UsageError when there is none yet)."""
    from .errors import UsageError

    if not log_path().exists():
        raise UsageError(f"No log yet ({log_path()}): generations are logged from now on")
    try:
        with closing(connect()) as db:
            yield db
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"The log ({log_path()}) cannot be read: {exc}") from exc


def history(conversation: str) -> list[sqlite3.Row]:
    """The turns of a conversation, in order."""
    with reading() as db:
        return db.execute(
            "SELECT * FROM generations WHERE conversation = ? ORDER BY turn, id", (conversation,)
        ).fetchall()


def latest_conversation() -> str | None:
    """The conversation of the newest text generation (`aigc text -c`)."""
    with reading() as db:
        row = db.execute(
            "SELECT conversation FROM generations WHERE modality = 'text' AND conversation IS NOT NULL "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
    return row["conversation"] if row else None


def log_generation(
    command: str,
    modality: str,
    record: dict[str, Any],
    settings: Any,
    *,
    prompt: str | None = None,
    path: Path | None = None,
    seconds: float | None = None,
    folder: str | Path | None = None,
    messages: tuple[tuple[str, str], ...] | None = None,
    conversation: str | None = None,
    turn: int | None = None,
    system: str | None = None,
    status: str | None = None,
    no_log: bool = False,
    data: bytes | None = None,
) -> int | None:
    """The one row builder: log a result of any command (text, chat, image, speak, batch, a server run).

    record: what the output records (the --json line: a completion's, an image's or an audio file's);
    settings: the settings dataclass that ran (settings.py), kept as the flags `aigc logs rerun` passes
    again, with the result's own seed (count left out: a row is one result); path: the file written, if
    any (its path, size and SHA-256 are kept); folder: the model folder that ran here, for its revision
    (else the record's `revision`, as a server or a batch job reports it);
    messages / conversation / turn: a text turn's history and place (a text result without a conversation
    starts one); system: the system message that applied; status: `interrupted` for a reply stopped part
    way (None: it finished); data: the output's bytes when no file was written here (a server's answer:
    its size and SHA-256 are kept). Returns the row's id, or None (see record_entry)."""
    from dataclasses import asdict

    ran = {k: v for k, v in asdict(settings).items() if v is not None and k != "count"}
    ran["seed"] = record.get("seed")
    entry: dict[str, Any] = {
        "command": command,
        "modality": modality,
        "model": record.get("model"),
        "source": record.get("source"),
        "seed": record.get("seed"),
        "device": record.get("device"),
        "dtype": record.get("dtype"),
        "backend": record.get("backend"),
        "seconds": seconds if seconds is not None else record.get("seconds"),
        "revision": revision_of(folder) or record.get("revision"),
        "status": status,
    }
    if modality == "text":
        ran["system"] = system
        entry.update(
            prompt=prompt,
            system=system,
            messages=[list(m) for m in messages] if messages else None,
            settings={"flags": ran, "record": {k: v for k, v in record.items() if k != "text"}},
            output=record.get("text"),
            conversation=conversation or new_conversation(),
            turn=turn or 1,
        )
    else:
        entry.update(
            prompt=record.get("prompt", record.get("text")) if prompt is None else prompt,
            settings={"flags": ran, "record": record},
            **(file_facts(path) or data_facts(data)),
        )
    return record_entry(entry, no_log)


def search(
    count: int, modality: str | None = None, query: str | None = None, before: int | None = None
) -> list[dict[str, Any]]:
    """The newest `count` rows (of one modality; matching a full-text query of prompts and outputs, as a
    phrase; with ids below `before`), newest first, as dicts with settings and messages read from their
    JSON; [] when there is no log yet. `aigc logs` and the server's GET /api/logs both list with it."""
    if not log_path().exists():
        return []
    where, params = [], []
    if modality:
        where.append("g.modality = ?")
        params.append(modality)
    if before is not None:
        where.append("g.id < ?")
        params.append(before)
    source = "generations g"
    if query:
        source = "generations_fts f JOIN generations g ON g.id = f.rowid"
        where.append("generations_fts MATCH ?")
        params.append('"' + query.replace('"', '""') + '"')  # the words as a phrase, not FTS syntax
    condition = f"WHERE {' AND '.join(where)}" if where else ""
    sql = f"SELECT g.* FROM {source} {condition} ORDER BY g.id DESC LIMIT ?"
    with reading() as db:
        return [as_dict(row) for row in db.execute(sql, [*params, count]).fetchall()]


def find(entry: int) -> dict[str, Any] | None:
    """Row `entry` as a dict (see search), or None when the log has no such row (or no log yet)."""
    if not log_path().exists():
        return None
    with reading() as db:
        row = db.execute("SELECT * FROM generations WHERE id = ?", (entry,)).fetchone()
    return as_dict(row) if row is not None else None


def as_dict(row: sqlite3.Row) -> dict[str, Any]:
    """A row as a dict, its settings and messages read from their JSON."""
    data = dict(row)
    for name in ("settings", "messages"):
        if data.get(name):
            data[name] = json.loads(data[name])
    return data


def used_paths(part: str, limit: int = 2000) -> list[str]:
    """The local paths of `part` (model, lora or vae) that the newest `limit` logged image and speech runs
    used, newest first: where a record that names one only by name (records.py) may find it again. []
    when there is no log or it cannot be read."""
    if not log_path().exists():
        return []
    found: list[str] = []
    try:
        with closing(connect()) as db:
            rows = db.execute(
                "SELECT settings FROM generations WHERE modality IN ('image', 'speech') "
                "ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
    except sqlite3.DatabaseError:
        return []
    for (kept,) in rows:
        try:
            record = (json.loads(kept) or {}).get("record") or {}
        except ValueError:
            continue
        if part == "lora":
            values = [x.get("name") for x in record.get("loras") or [] if isinstance(x, dict)]
        else:
            values = [record.get(part)]
        found += [v for v in values if isinstance(v, str) and Path(v).is_absolute() and v not in found]
    return found
