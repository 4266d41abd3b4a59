"""`python -m selfinstruct seeds check PATH`: validate a seed file and summarize what it holds."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from selfinstruct.filters import HeuristicFilter
from selfinstruct.filters.rouge_index import RougeIndex
from selfinstruct.filters.tokenizers import TOKENIZERS, count_words, default_tokenizer, detect_language
from selfinstruct.resources import resource_path
from selfinstruct.tasks import load_seeds_located


@dataclass
class SeedSummary:
    path: str
    language: str
    tokenizer: str
    tasks: int
    classification: int
    empty_input: int
    instances_per_task: dict[int, int]  # instances -> tasks
    length: dict[str, float]  # instruction length in words (a CJK character is a word)
    heuristic_rejects: dict[str, int]  # what the run's heuristic filters would say of each seed
    near_duplicates: list[tuple[str, str, float]]  # (earlier, later, ROUGE-L F) above the threshold
    threshold: float
    problems: list[str] = field(default_factory=list)  # 'FILE:LINE: what is wrong'

    @property
    def classification_share(self) -> float:
        return self.classification / self.tasks

    @property
    def empty_input_share(self) -> float:
        return self.empty_input / self.tasks

    def to_dict(self) -> dict:
        return asdict(self) | {
            "classification_share": self.classification_share,
            "empty_input_share": self.empty_input_share,
        }


def check_seeds(path: Path, threshold: float = 0.7, tokenizer: str = "auto") -> SeedSummary:
    """Read a seed file (schema errors raise UserError naming the line) and summarize it."""
    located = load_seeds_located(path)
    tasks = [t for _, t in located]
    instructions = [t.instruction for t in tasks]
    if tokenizer == "auto":
        tokenizer = default_tokenizer(instructions)

    problems = []
    first_seen: dict[str, str] = {}
    for where, task in located:
        if not task.instances:
            problems.append(f"{where}: task '{task.id}' has no instances — add at least one")
        for i, inst in enumerate(task.instances):
            if not inst.output.strip():
                problems.append(f"{where}: instances[{i}].output is empty — write the expected output")
        if task.id in first_seen:
            problems.append(f"{where}: id '{task.id}' already used at {first_seen[task.id]}")
        first_seen.setdefault(task.id, where)

    heuristics = HeuristicFilter.from_file(resource_path("filters/default.toml"))
    rejects = Counter(r for r in map(heuristics.reason, instructions) if r)

    pool = RougeIndex(threshold, TOKENIZERS[tokenizer])
    near = []
    for text in instructions:
        match, score = pool.query(text)
        if match is not None:
            near.append((pool.texts[match], text, score))
        pool.add(text)

    lengths = [count_words(t) for t in instructions]
    return SeedSummary(
        path=str(path),
        language=detect_language(instructions),
        tokenizer=tokenizer,
        tasks=len(tasks),
        classification=sum(t.is_classification for t in tasks),
        empty_input=sum(bool(t.instances) and all(not i.input.strip() for i in t.instances) for t in tasks),
        instances_per_task=dict(sorted(Counter(len(t.instances) for t in tasks).items())),
        length={
            "min": min(lengths),
            "median": statistics.median(lengths),
            "mean": round(statistics.fmean(lengths), 1),
            "max": max(lengths),
        },
        heuristic_rejects=dict(rejects),
        near_duplicates=near,
        threshold=threshold,
        problems=problems,
    )


def format_summary(s: SeedSummary) -> str:
    per_task = ", ".join(f"{k}: {v}" for k, v in s.instances_per_task.items())
    length = " / ".join(f"{s.length[k]:g}" for k in ("min", "median", "mean", "max"))
    rejects = ", ".join(f"{k}: {v}" for k, v in s.heuristic_rejects.items()) or "none"
    rows = [
        ("file", s.path),
        ("language / tokenizer", f"{s.language} / {s.tokenizer}"),
        ("tasks", str(s.tasks)),
        ("classification", f"{s.classification} ({s.classification_share:.0%})"),
        ("empty input", f"{s.empty_input} ({s.empty_input_share:.0%})"),
        ("instances per task", per_task),
        ("instruction words min/median/mean/max", length),
        ("heuristic filter rejects", rejects),
        (f"near-duplicate pairs (ROUGE-L > {s.threshold:g})", str(len(s.near_duplicates))),
        ("problems", str(len(s.problems))),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    for earlier, later, score in s.near_duplicates[:10]:
        lines.append(f"  {score:.3f}  {earlier!r}  ~  {later!r}")
    lines += s.problems
    return "\n".join(lines)
