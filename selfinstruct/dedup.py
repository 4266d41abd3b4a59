"""`python -m selfinstruct dedup`: the run's ROUGE-L novelty filter on any instruction file.

Records are processed in order; each is dropped when its ROUGE-L F against an instruction kept
before it (or one of `--against`) is above the threshold, and kept otherwise. INPUT may be JSONL,
a JSON array, or plain text with one instruction per line; OUTPUT has the same form.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from selfinstruct.errors import UserError
from selfinstruct.filters.rouge_index import RougeIndex
from selfinstruct.filters.tokenizers import TOKENIZERS, default_tokenizer
from selfinstruct.locking import exclusive
from selfinstruct.tasks import atomic_file, json_rows, load_seeds, read_text


@dataclass
class DedupResult:
    read: int
    kept: int
    dropped: int
    tokenizer: str


def read_input(path: Path, field: str) -> tuple[str, list[Any], list[str]]:
    """(format, records, texts): format is 'jsonl', 'json' or 'text'."""
    text = read_text(path, "input not found — pass an existing JSONL, JSON or text file", "not UTF-8 text")
    if text.lstrip().startswith(("[", "{")):
        rows = json_rows(path, text)
        records = [row for _, row in rows]
        form = "json" if text.lstrip().startswith("[") else "jsonl"
        return form, records, [_field(row, field, where) for where, row in rows]
    texts = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "text", texts, texts


def _field(record: Any, field: str, where: str) -> str:
    if isinstance(record, str):
        return record
    if not isinstance(record, dict) or not isinstance(record.get(field), str):
        raise UserError(f"{where}: no text field '{field}' — pass --field with the instruction's key")
    return record[field]


def write_output(path: Path, form: str, records: list[Any]) -> None:
    """Write the whole file, or nothing (see atomic_file)."""
    with atomic_file(path) as f:
        if form == "json":
            json.dump(records, f, ensure_ascii=False, indent=2)
            f.write("\n")
        elif form == "jsonl":
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        else:
            f.writelines(r + "\n" for r in records)


def dedup(
    input: Path,
    output: Path,
    field: str = "instruction",
    threshold: float = 0.7,
    against: Path | None = None,
    rejected: Path | None = None,
    tokenizer: str = "auto",
    progress: bool = True,
) -> DedupResult:
    """Write the records of `input` that are novel to `output`, and the others to `rejected`.

    Both outputs are new files (missing folders are made), each locked against another process
    writing it for as long as the job runs; nothing that exists is overwritten.
    """
    if not 0 < threshold <= 1:
        raise UserError(f"--threshold: {threshold} is outside (0, 1] — pass e.g. 0.7")
    outputs = [Path(output)] + ([Path(rejected)] if rejected is not None else [])
    if len(outputs) == 2 and outputs[0].resolve() == outputs[1].resolve():
        raise UserError(
            f"--rejected {rejected} is the same file as -o {output} — "
            "give the dropped records a path of their own"
        )
    with ExitStack() as stack:
        for path in outputs:
            _make_parent(path)
            stack.enter_context(exclusive(path, "dedup"))
            if path.exists():
                raise UserError(f"{path}: already exists — choose another path; nothing was overwritten")
        return _dedup(Path(input), outputs, field, threshold, against, tokenizer, progress)


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = "a file has that name" if isinstance(exc, FileExistsError) else exc.strerror
        raise UserError(f"{path}: cannot create its folder ({why}) — choose another path") from None


def _dedup(
    input: Path,
    outputs: list[Path],
    field: str,
    threshold: float,
    against: Path | None,
    tokenizer: str,
    progress: bool,
) -> DedupResult:
    form, records, texts = read_input(input, field)
    seeds = [t.instruction for t in load_seeds(against)] if against else []
    if tokenizer == "auto":
        tokenizer = default_tokenizer(seeds + texts[:10000])
    index = RougeIndex(threshold, TOKENIZERS[tokenizer])
    for text in seeds:
        index.add(text)

    kept, dropped = [], []
    for record, text in tqdm(zip(records, texts, strict=True), total=len(texts), disable=not progress,
                             desc="dedup", unit="rec", mininterval=0.5):  # fmt: skip
        match, score = index.query(text)
        if match is None:
            index.add(text)
            kept.append(record)
        else:
            dropped.append(
                {"record": record, "most_similar": index.texts[match], "similarity": round(score, 4)}
            )
    write_output(outputs[0], form, kept)
    if len(outputs) == 2:
        write_output(outputs[1], "jsonl", dropped)
    return DedupResult(read=len(texts), kept=len(kept), dropped=len(dropped), tokenizer=tokenizer)
