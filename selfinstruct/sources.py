"""What `report` and `export` read: a run directory or any instruction file, as one table of records.

A source is either
- a run directory: its dataset.jsonl is the records, its accepted machine instructions are the
  instructions, and the stage files, stats.json and config.json tell how they were made; or
- a file, one record per JSONL line or JSON array item, in any layout the project reads: our
  dataset.jsonl and Alpaca (`instruction`, `input`, `output`), Self-Instruct seed tasks
  (`instruction` with a list of `instances`), or chat (`messages`: the first user turn is the
  instruction, the last assistant turn the output).

Records land in a pandas DataFrame with the columns of RECORD_COLUMNS. `task` groups the records of
one task (a run's task id, a seed's id, else the instruction text), so that a split never separates
them; `is_classification` is None where the source does not say.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from selfinstruct.errors import UserError
from selfinstruct.records import read_run_file, read_stats
from selfinstruct.tasks import read_json_rows, read_text

RECORD_COLUMNS = ["id", "task", "instruction", "input", "output", "is_classification"]
RUN_MARKERS = ("config.json", "machine_instructions.jsonl")


@dataclass
class RunFiles:
    """What a run directory holds, read as it is (a run may still be writing it)."""

    config: dict[str, Any]
    stats: dict[str, Any] | None
    machine_instructions: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    classification: list[dict[str, Any]]
    instances: list[dict[str, Any]]


@dataclass
class Source:
    path: Path
    layout: str  # "run", or the file's layout: "dataset", "alpaca", "seed", "messages"
    records: pd.DataFrame
    instructions: pd.DataFrame  # one row per distinct instruction: task, instruction, is_classification
    run: RunFiles | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def is_run(self) -> bool:
        return self.run is not None


def load_source(path: Path) -> Source:
    """Read a run directory or an instruction file; every problem is a UserError naming the place."""
    path = Path(path)
    if path.is_dir():
        return _load_run(path)
    return _load_file(path)


# Run directories -------------------------------------------------------------------------------
def _load_run(path: Path) -> Source:
    if not all((path / name).is_file() for name in RUN_MARKERS):
        raise UserError(
            f"{path}: not a run directory (no config.json and machine_instructions.jsonl) — pass a run "
            "directory that `selfinstruct run` wrote, or an instruction file"
        )
    config = _read_json(path / "config.json")
    stats = read_stats(path)
    run = RunFiles(
        config=config,
        stats=stats.model_dump() if stats is not None else None,
        **{name: _dicts(path, name) for name in _STAGE_FILES},
    )
    dataset = read_run_file(path, "dataset.jsonl")
    verdicts = {r["id"]: r["is_classification"] for r in run.classification}
    instructions = pd.DataFrame(
        {
            "task": [r["id"] for r in run.machine_instructions],
            "instruction": [r["instruction"] for r in run.machine_instructions],
            "is_classification": [verdicts.get(r["id"]) for r in run.machine_instructions],
        },
        columns=["task", "instruction", "is_classification"],
    )
    records = pd.DataFrame(
        [(r.id, r.id.rpartition("-")[0] or r.id, r.instruction, r.input, r.output, r.is_classification)
         for r in dataset],
        columns=RECORD_COLUMNS,
    )  # fmt: skip
    return Source(path, "run", records, instructions, run)


_STAGE_FILES = ("machine_instructions", "rejected", "classification", "instances")


def _read_json(path: Path) -> dict[str, Any]:
    text = read_text(path, "not found", "not UTF-8 text")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def _dicts(run_dir: Path, name: str) -> list[dict[str, Any]]:
    return [record.model_dump() for record in read_run_file(run_dir, f"{name}.jsonl")]


# Instruction files -----------------------------------------------------------------------------
def _load_file(path: Path) -> Source:
    rows = read_json_rows(
        path,
        "the file",
        "record",
        "not found — pass a run directory or an instruction file (JSON or JSONL)",
        "not UTF-8 text — instruction files are JSON or JSONL",
    )
    layouts: set[str] = set()
    records: list[dict[str, Any]] = []
    for n, (where, row) in enumerate(rows):
        layout, found = _row_records(where, n, row)
        layouts.add(layout)
        records.extend(found)
    layout = layouts.pop() if len(layouts) == 1 else "mixed"
    frame = pd.DataFrame(records, columns=RECORD_COLUMNS)
    known = frame["is_classification"].notna()
    instructions = frame.drop_duplicates("instruction")[["task", "instruction", "is_classification"]]
    if not known.all():
        instructions = instructions.assign(is_classification=None)
    return Source(path, layout, frame, instructions.reset_index(drop=True))


HINT = (
    "records need 'instruction' and 'output' (Alpaca, a run's dataset.jsonl), 'instruction' and "
    "'instances' (seed tasks), or 'messages' (chat)"
)


def _row_records(where: str, n: int, row: Any) -> tuple[str, list[dict[str, Any]]]:
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object — {HINT}")
    if "messages" in row:
        return "messages", [_chat_record(where, n, row)]
    if "instruction" not in row:
        raise UserError(f"{where}: no 'instruction' field — {HINT}")
    instruction = _text(where, row, "instruction", required=True)
    flag = row.get("is_classification")
    if flag is not None and not isinstance(flag, bool):
        raise UserError(f"{where}: field 'is_classification' must be true or false (got {flag!r})")
    if "instances" in row:
        instances = row["instances"]
        if not isinstance(instances, list) or not instances:
            raise UserError(f"{where}: field 'instances' must be a non-empty list of input/output objects")
        task = str(row.get("id", f"task_{n}"))
        found = []
        for k, instance in enumerate(instances):
            at = f"{where}: instances.{k}"
            if not isinstance(instance, dict):
                raise UserError(f"{at}: expected an object with 'input' and 'output'")
            found.append(
                _record(
                    f"{task}-{k}",
                    task,
                    instruction,
                    _text(at, instance, "input"),
                    _text(at, instance, "output", required=True),
                    flag,
                )  # fmt: skip
            )
        return "seed", found
    output = _text(where, row, "output", required=True)
    record_id = row.get("id")
    layout = "dataset" if isinstance(record_id, str) and "is_classification" in row else "alpaca"
    if isinstance(record_id, str) and record_id:
        task = record_id.rpartition("-")[0] or record_id
    else:
        record_id, task = f"record_{n}", instruction
    return layout, [_record(record_id, task, instruction, _text(where, row, "input"), output, flag)]


def _chat_record(where: str, n: int, row: dict[str, Any]) -> dict[str, Any]:
    messages = row["messages"]
    ok = isinstance(messages, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages
    )
    if not ok:
        raise UserError(
            f"{where}: field 'messages' must be a list of objects with string 'role' and 'content'"
        )
    users = [m["content"] for m in messages if m["role"] == "user"]
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    if not users or not answers or not users[0].strip():
        raise UserError(f"{where}: field 'messages' needs a user turn and an assistant turn")
    return _record(f"record_{n}", users[0], users[0], "", answers[-1], None)


def _text(where: str, row: dict[str, Any], key: str, required: bool = False) -> str:
    """A text field; `input` may be missing or null, `output` may be empty, `instruction` may not."""
    value = row.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (key == "instruction" and not value.strip()):
        got = "missing" if key not in row else f"got {json.dumps(value, ensure_ascii=False)[:40]}"
        kind = "a non-empty string" if key == "instruction" else "a string"
        raise UserError(f"{where}: field '{key}' must be {kind} ({got})")
    return value


def _record(record_id, task, instruction, input_, output, flag) -> dict[str, Any]:
    return {
        "id": record_id,
        "task": task,
        "instruction": instruction,
        "input": input_,
        "output": output,
        "is_classification": flag,
    }
