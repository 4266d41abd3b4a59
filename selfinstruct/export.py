"""`python -m selfinstruct export`: a run's records, or any instruction file's, in the layout a trainer
reads, or as a Hugging Face dataset folder with a card. See docs/export.md.

    python -m selfinstruct export outputs/run-X --format messages -o sft/train.jsonl
    python -m selfinstruct export outputs/run-X --format hf -o hf/my-data --license apache-2.0
    hf upload USER/my-data hf/my-data --repo-type dataset

The output is written whole or not at all (files through a temporary file, the hf folder built
beside it and renamed into place), under a lock; one that exists is kept unless --overwrite.
This module imports only the standard library at the top, so that `--help` stays instant.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shlex
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfinstruct.errors import StorageError, UserError
from selfinstruct.locking import exclusive

FORMATS = ("alpaca", "messages", "sharegpt", "openai", "parquet", "hf")
CHAT_FORMATS = ("messages", "sharegpt", "openai")
SHAREGPT_ROLES = {"user": "human", "assistant": "gpt"}  # LLaMA-Factory's default tags
HF_ENTRIES = {"README.md", "data"}  # all an exported folder holds: --overwrite replaces only such a folder
DEFAULT_VAL_FRACTION = 0.05
DEFAULT_SEED = 0
DEFAULT_LICENSE = "unknown"


@dataclass
class ExportResult:
    out: Path
    format: str
    splits: dict[str, int]  # records per split ("all" for a single file)
    tasks: dict[str, int] = field(default_factory=dict)  # tasks per split (hf)
    left_out: int = 0  # records with an empty output, left out of the chat formats


# Records as rows of each format (pure) ---------------------------------------------------------
def user_turn(instruction: str, input_: str) -> str:
    """The user's message: the instruction, then a blank line and the input when it has any text —
    the trainer's rule (selfinstruct.train.data.to_messages)."""
    return f"{instruction}\n\n{input_}" if input_.strip() else instruction


def chat(record: dict[str, Any], system: str | None = None) -> list[dict[str, str]]:
    """A record as chat messages: [system,] user (instruction and input), assistant (the output as is)."""
    turns = [
        {"role": "user", "content": user_turn(record["instruction"], record["input"])},
        {"role": "assistant", "content": record["output"]},
    ]
    return ([{"role": "system", "content": system}] if system is not None else []) + turns


def alpaca_row(record: dict[str, Any], system: str | None = None) -> dict[str, Any]:
    return {"instruction": record["instruction"], "input": record["input"], "output": record["output"]}


def messages_row(record: dict[str, Any], system: str | None = None) -> dict[str, Any]:
    """trl's conversational layout, and OpenAI's chat fine-tuning line: `messages` and nothing else."""
    return {"messages": chat(record, system)}


def sharegpt_row(record: dict[str, Any], system: str | None = None) -> dict[str, Any]:
    """LLaMA-Factory's ShareGPT layout (data/README.md there): human/gpt turns, the system prompt
    in its own key."""
    row: dict[str, Any] = {
        "conversations": [{"from": SHAREGPT_ROLES[m["role"]], "value": m["content"]} for m in chat(record)]
    }
    if system is not None:
        row["system"] = system
    return row


ROWS = {"alpaca": alpaca_row, "messages": messages_row, "openai": messages_row, "sharegpt": sharegpt_row}


def table(records):
    """The columns of parquet and hf: instruction, input, output, id, and is_classification when the
    source says it for every record."""
    columns = ["instruction", "input", "output", "id"]
    if not records["is_classification"].notna().all():
        return records[columns].reset_index(drop=True)
    frame = records[[*columns, "is_classification"]].reset_index(drop=True)
    return frame.astype({"is_classification": bool})


def validation_tasks(tasks: list[str], fraction: float, seed: int) -> set[str]:
    """Whole tasks for the validation split, drawn in a seeded random order until they hold
    round(n * fraction) records (at least one), so that no task has records in both splits."""
    if fraction == 0:
        return set()
    sizes = Counter(tasks)
    order = list(sizes)
    random.Random(seed).shuffle(order)
    target = max(1, round(len(tasks) * fraction))
    held: set[str] = set()
    count = 0
    for task in order:
        if count >= target:
            break
        held.add(task)
        count += sizes[task]
    if count == len(tasks):
        raise UserError(
            f"--val-fraction {fraction} leaves no training records: the {len(tasks)} records are "
            f"{len(sizes)} task(s), and a task goes to one split whole — lower it, or pass 0 for train only"
        )
    return held


# The command -----------------------------------------------------------------------------------
def export(
    path: Path,
    fmt: str,
    out: Path,
    *,
    val_fraction: float | None = None,
    seed: int | None = None,
    license: str | None = None,
    system: str | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write the records of `path` (a run directory or an instruction file) to `out` in format `fmt`."""
    from selfinstruct.sources import load_source

    path, out = Path(path), Path(out)
    if out.name in ("", ".."):
        raise UserError(f"-o {out}: names no file or folder of its own — pass e.g. -o exports/my-data")
    _check_options(fmt, val_fraction, seed, license, system)
    _check_out(out, fmt, overwrite)
    source = load_source(path)
    if source.records.empty:
        raise UserError(f"{path}: holds no records yet — nothing to export")
    _refuse_own_input(source, out)
    _make_parent(out)
    with exclusive(out.with_name(f"{out.name}.export"), "export"):
        _check_out(out, fmt, overwrite)  # again, under the lock: another export may have written it
        if fmt == "hf":
            fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
            seed = DEFAULT_SEED if seed is None else seed
            license = license or DEFAULT_LICENSE
            command = export_command(path, out, fraction, seed, license)
            return _write_hf(source, out, fraction, seed, license, command)
        return _write_file(source, fmt, out, system)


def export_command(path: Path, out: Path, fraction: float, seed: int, license: str) -> str:
    """The hf export as a command line for the card, with file names only (no local folders)."""
    args = ["python", "-m", "selfinstruct", "export", path.name, "--format", "hf", "-o", out.name]
    args += ["--val-fraction", f"{fraction:g}", "--seed", str(seed)]
    if license != DEFAULT_LICENSE:
        args += ["--license", license]
    return shlex.join(args)


def _check_options(fmt, val_fraction, seed, license, system) -> None:
    if fmt not in FORMATS:
        raise UserError(f"--format: unknown format {fmt!r} — pass one of {', '.join(FORMATS)}")
    if fmt != "hf":
        for flag, value in (("--val-fraction", val_fraction), ("--seed", seed), ("--license", license)):
            if value is not None:
                raise UserError(
                    f"{flag}: only --format hf has splits and a dataset card — leave it out, or pass "
                    "--format hf"
                )
    if system is not None and fmt not in CHAT_FORMATS:
        raise UserError(
            f"--system: --format {fmt} has no system message — leave it out, or pass one of "
            f"{', '.join(CHAT_FORMATS)}"
        )
    if system is not None and not system.strip():
        raise UserError("--system: the text is blank — pass the system prompt, or leave the flag out")
    if val_fraction is not None and not 0 <= val_fraction < 1:
        raise UserError(
            f"--val-fraction: {val_fraction} is outside [0, 1) — pass e.g. 0.05, or 0 for train only"
        )
    if license is not None and (not license.strip() or any(c.isspace() for c in license)):
        raise UserError(
            f"--license: {license!r} is not a license id — pass one such as apache-2.0 or cc-by-4.0, "
            "or leave it out (unknown)"
        )


def _check_out(out: Path, fmt: str, overwrite: bool) -> None:
    if not (out.exists() or out.is_symlink()):
        return
    if not overwrite:
        raise UserError(
            f"{out}: exists — pass --overwrite to replace it, or -o with a new path; nothing was changed"
        )
    if fmt == "hf" and not out.is_dir():
        raise UserError(
            f"{out}: is a file, and --format hf writes a folder — pass -o with a new path; "
            "nothing was changed"
        )
    if fmt == "hf" and (others := sorted(set(os.listdir(out)) - HF_ENTRIES)):
        raise UserError(
            f"{out}: holds more than an exported dataset ({', '.join(others[:3])}) — --overwrite replaces "
            "only a folder that export wrote; pass -o with a new path; nothing was changed"
        )
    if fmt != "hf" and out.is_dir():
        raise UserError(
            f"{out}: is a folder, and --format {fmt} writes one file — pass -o with a file path; "
            "nothing was changed"
        )


def _refuse_own_input(source, out: Path) -> None:
    from selfinstruct.records import RUN_FILES

    if not out.exists():
        return
    run_files = {"config.json", *RUN_FILES}  # a run's own files: never an output, whatever --overwrite says
    own = out.samefile(source.path) or (
        source.is_run and out.name in run_files and out.parent.samefile(source.path)
    )
    if own:
        raise UserError(f"{out}: is what the export reads — pass -o with a new path; nothing was changed")


def _make_parent(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = (
            "a file has that name" if isinstance(exc, (FileExistsError, NotADirectoryError)) else exc.strerror
        )
        raise UserError(f"{out}: cannot create its folder ({why}) — choose another path") from None


# Writers ---------------------------------------------------------------------------------------
def _write_file(source, fmt: str, out: Path, system: str | None) -> ExportResult:
    from selfinstruct.tasks import atomic_file

    records = source.records
    if fmt == "parquet":
        with atomic_file(out, binary=True) as f:
            table(records).to_parquet(f, index=False)
        return ExportResult(out, fmt, {"all": len(records)})
    left_out = 0
    if fmt in CHAT_FORMATS:  # an empty assistant turn teaches nothing, and trainers refuse it
        keep = records["output"].str.strip() != ""
        left_out = int((~keep).sum())
        records = records[keep]
        if records.empty:
            raise UserError(f"{source.path}: every record has an empty output — nothing to export as chat")
    rows = [ROWS[fmt](r, system) for r in records[["instruction", "input", "output"]].to_dict("records")]
    with atomic_file(out) as f:
        if fmt in ("messages", "openai"):
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        else:
            json.dump(rows, f, ensure_ascii=False, indent=2)
            f.write("\n")
    return ExportResult(out, fmt, {"all": len(rows)}, left_out=left_out)


def _write_hf(source, out: Path, fraction: float, seed: int, license: str, command: str) -> ExportResult:
    from selfinstruct.dataset_card import Split, render_card

    records = source.records
    held = validation_tasks(records["task"].tolist(), fraction, seed)
    is_validation = records["task"].isin(held)
    parts = {"train": records[~is_validation]}
    if held:
        parts["validation"] = records[is_validation]
    files = {name: _parquet_bytes(table(part)) for name, part in parts.items()}
    splits = [
        Split(name, split_file(name, files[name]), len(part), part["task"].nunique())
        for name, part in parts.items()
    ]
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
        os.chmod(tmp, 0o777 & ~_umask())  # as mkdir would have made it, not mkdtemp's 0700
        (tmp / "data").mkdir()
        for split in splits:  # plain writes: the folder as a whole is what appears at once
            (tmp / split.path).write_bytes(files[split.name])
        (tmp / "README.md").write_text(render_card(source, splits, license, command), encoding="utf-8")
        _move_into_place(tmp, out)
    except BaseException as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise StorageError(out, exc) from None
        raise
    return ExportResult(
        out, "hf", {s.name: s.records for s in splits}, tasks={s.name: s.tasks for s in splits}
    )


def split_file(split: str, data: bytes) -> str:
    """A split's file in the folder, named with the start of its sha256 as `push_to_hub` once named
    shards. The name must change with the content: `datasets` caches a local folder whose card lists
    its data files under the folder's name and those paths only, so a re-export under the same
    names would load the earlier export's cached rows."""
    return f"data/{split}-00000-of-00001-{hashlib.sha256(data).hexdigest()[:16]}.parquet"


def _parquet_bytes(frame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder to `out`; an earlier export there (checked by _check_out) is put
    aside first and removed once the new one is in place, or put back if the rename fails."""
    if not out.exists():
        os.rename(tmp, out)
        return
    old = tmp.with_suffix(".old")
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def summary(result: ExportResult) -> str:
    """The one line the command prints."""
    if result.format == "hf":
        parts = ", ".join(
            f"{name} {n:,} ({_count(result.tasks[name], 'task')})" for name, n in result.splits.items()
        )  # fmt: skip
        line = f"exported {sum(result.splits.values()):,} records as hf: {parts} -> {result.out}"
    else:
        line = f"exported {result.splits['all']:,} records as {result.format} -> {result.out}"
    if result.left_out:
        line += f" ({result.left_out:,} with an empty output left out)"
    return line


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
