"""Task and instance records; seed loading (Self-Instruct seed JSONL, Alpaca JSON/JSONL); JSONL I/O."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from selfinstruct.errors import StorageError, UserError, first_error

log = logging.getLogger(__name__)
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class Instance(BaseModel):
    input: str = ""
    output: str


class SeedTask(BaseModel):
    """A human-written task, in the original Self-Instruct `seed_tasks.jsonl` format."""

    model_config = ConfigDict(extra="ignore")

    id: str
    name: str = ""
    instruction: str = Field(min_length=1)
    instances: list[Instance] = Field(default_factory=list)
    is_classification: bool = False


def load_seeds_located(path: Path) -> list[tuple[str, SeedTask]]:
    """Seed tasks with where each one is written ('FILE:LINE' or 'FILE: item N'), for messages."""
    path = Path(path)
    rows = read_json_rows(
        path,
        "seed file",
        "task",
        "seed file not found — pass --seeds with an existing file",
        "not UTF-8 text — seed files are JSON or JSONL",
    )
    return [(where, _to_task(where, i, row)) for i, (where, row) in enumerate(rows)]


def load_seeds(path: Path) -> list[SeedTask]:
    """Read seed tasks from seed-format JSONL, Alpaca JSONL, or a JSON array of either."""
    return [task for _, task in load_seeds_located(path)]


def read_text(path: Path, not_found: str, not_text: str) -> str:
    """A UTF-8 file's text, without a leading byte-order mark; a missing file, a directory, an
    unreadable file or other bytes are a UserError '{path}: {message}'."""
    path = Path(path)
    if path.is_dir():
        raise UserError(
            f"{path}: is a directory, not a file — {not_found.partition(' — ')[2] or 'pass a file'}"
        )
    if not path.is_file():
        raise UserError(f"{path}: {not_found}")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path}: {not_text}") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the file ({exc.strerror})") from None


def read_toml(path: Path, not_found: str) -> dict[str, Any]:
    """A TOML file's tables; every problem with the file is a UserError naming it."""
    text = read_text(path, not_found, "not UTF-8 text — a TOML file is UTF-8")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise UserError(f"{path}: not valid TOML: arrays or tables nested too deeply") from None


def read_json_rows(path: Path, what: str, unit: str, not_found: str, not_text: str) -> list[tuple[str, Any]]:
    """The records of a JSON or JSONL file (see json_rows), with one-line errors naming the file
    ('{what} is empty — it needs at least one {unit}', '{what} holds no {unit}s') when there are none."""
    text = read_text(path, not_found, not_text)
    if not text.strip():
        raise UserError(f"{path}: {what} is empty — it needs at least one {unit}")
    rows = json_rows(path, text)
    if not rows:
        raise UserError(f"{path}: {what} holds no {unit}s")
    return rows


TOO_DEEP = "JSON nested too deeply to read — records are flat objects of text fields; check the file"


def json_rows(path: Path, text: str) -> list[tuple[str, Any]]:
    """The records of a JSON array or of JSONL text, each with where it is written ('FILE:LINE' or
    'FILE: item N'); invalid JSON is a UserError naming the line."""
    return _json_array_rows(path, text) if text.lstrip().startswith("[") else _jsonl_rows(path, text)


def _json_array_rows(path: Path, text: str) -> list[tuple[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    except RecursionError:
        raise UserError(f"{path}: {TOO_DEEP}") from None
    return [(f"{path}: item {i}", row) for i, row in enumerate(data)]


def _jsonl_rows(path: Path, text: str) -> list[tuple[str, Any]]:
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((f"{path}:{lineno}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{lineno}: invalid JSON ({exc.msg}) — one JSON object per line") from None
        except RecursionError:
            raise UserError(f"{path}:{lineno}: {TOO_DEEP}") from None
    return rows


def _to_task(where: str, index: int, row: Any) -> SeedTask:
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object with an 'instruction' field")
    if "instances" not in row:  # Alpaca record: one instance
        row = {
            "id": str(row.get("id", f"seed_task_{index}")),
            "instruction": row.get("instruction"),
            "instances": [{"input": row.get("input", ""), "output": row.get("output")}],
            "is_classification": row.get("is_classification", False),
        }
    try:
        return SeedTask.model_validate(row)
    except ValidationError as exc:
        field, message = first_error(exc)
        raise UserError(f"{where}: field '{field}': {message}") from None


def jsonl_line(record: dict[str, Any]) -> bytes:
    """One JSONL line: compact UTF-8 JSON (serialized in Rust by pydantic-core) and a newline."""
    return pydantic_core.to_json(record) + b"\n"


class JsonlWriter:
    """Append-only JSONL: each record is one line, handed to the OS in one unbuffered write.

    Nothing waits in a buffer, so a crash or a second signal loses nothing already written, and a
    failed write (disk full, I/O error) leaves at most a torn last line, which `recover_jsonl`
    drops on resume. Such a failure is a StorageError naming the file.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StorageError(self.path, exc) from None

    def write(self, record: dict[str, Any]) -> None:
        data = memoryview(jsonl_line(record))
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError as exc:
            raise StorageError(self.path, exc) from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def recover_jsonl(path: Path, validate: Callable[[dict[str, Any]], Any] | None = None) -> list[Any]:
    """Read an append-only JSONL file a killed run may have left, and cut off a torn last line.

    Records are written whole and flushed one at a time, so only the last line can be incomplete:
    it is dropped (the file is truncated to the last complete record). A bad line anywhere else
    means the file was edited by hand, and is an error naming the line. With `validate` (which
    returns the record to keep or raises ValueError), a line that is not a valid record is skipped
    with a warning instead: for files whose records can be fetched again, like the response cache.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = _read_bytes(path)
    lines, good_end = _scan_jsonl(data)
    records = []
    for lineno, record in lines:
        if record is None:
            if validate is None:
                raise UserError(f"{path}:{lineno}: not a JSON record — fix or remove the line to resume")
            log.warning("%s:%d: skipping a line that is not a JSON record", path, lineno)
            continue
        if validate is not None:
            try:
                record = validate(record)
            except ValueError as exc:
                log.warning("%s:%d: skipping an invalid record (%s)", path, lineno, _first_error(exc))
                continue
        records.append(record)
    if good_end < len(data):
        log.warning("%s: dropping an incomplete last line left by an interrupted run", path)
        try:
            os.truncate(path, good_end)
        except OSError as exc:
            raise StorageError(path, exc) from None
    return records


def scan_jsonl(path: Path) -> list[tuple[int, dict[str, Any] | None]]:
    """The complete lines of an append-only JSONL file, read without changing it (a run may be
    writing it): (line number, record), the record None for a line that is not a JSON object. A
    torn last line, which a killed run or a write still under way leaves, is not among them."""
    path = Path(path)
    if not path.exists():
        return []
    return _scan_jsonl(_read_bytes(path))[0]


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StorageError(path, exc, doing="read") from None


def _scan_jsonl(data: bytes) -> tuple[list[tuple[int, dict[str, Any] | None]], int]:
    """The non-blank lines before a torn tail, as `scan_jsonl` gives them, and the offset where that
    tail starts (len(data) when there is none)."""
    lines: list[tuple[int, dict[str, Any] | None]] = []
    good_end = 0
    for lineno, line in enumerate(data.split(b"\n"), 1):
        end = good_end + len(line) + 1
        if not line.strip():
            good_end = min(end, len(data))
            continue
        try:
            record = json.loads(line)
            complete = end <= len(data)  # the line has its newline
        except (json.JSONDecodeError, UnicodeDecodeError):
            record, complete = None, False
        if not complete or not isinstance(record, dict):
            if not data[end - 1 :].strip():  # nothing after this line: a torn tail
                break
            record = None
        good_end = end
        lines.append((lineno, record))
    return lines, good_end


def _first_error(exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        return ": ".join(first_error(exc))
    return str(exc)


@contextlib.contextmanager
def atomic_file(path: Path, binary: bool = False) -> Iterator[Any]:
    """A file to write (UTF-8 text, or bytes with `binary`) that replaces `path` only once it is
    written whole, so readers never see half. A failure (disk full, I/O error, a signal) removes the
    temporary file and leaves `path` as it was; an OSError becomes a StorageError naming `path`."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_UMASK)  # as open() would have made it, not mkstemp's 0600
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            raise StorageError(path, exc) from None
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """Write indented JSON through `atomic_file`."""
    text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    with atomic_file(path) as f:
        f.write(text)
