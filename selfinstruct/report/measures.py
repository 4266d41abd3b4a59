"""The report's numbers, computed with pandas over a Source: the Self-Instruct paper's Table 1, a
run's funnel and novelty yield, ROUGE-L to the nearest seed (Fig. 4), length histograms (Fig. 5) and
a review sample (for a human audit like the paper's Table 2)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from selfinstruct.filters.rouge_index import RougeIndex
from selfinstruct.filters.tokenizers import TOKENIZERS, count_words, default_tokenizer
from selfinstruct.sources import Source

# Self-Instruct (Wang et al., 2022), Table 1: statistics of the generated data (GPT-3 davinci).
PAPER_TABLE1 = {
    "instructions": 52445,
    "classification_instructions": 11584,
    "instances": 82439,
    "empty_input_instances": 35878,
    "avg_words": {"instruction": 15.9, "input_nonempty": 12.7, "output": 18.9},
}
WORDS_NOTE = (
    "A word is a whitespace-separated token; in Chinese, Japanese and Korean text each ideograph, kana "
    "or hangul syllable counts as one word."
)
REVIEW_COLUMNS = ["valid_instruction", "appropriate_input", "correct_output", "all_valid"]


def word_counts(texts: pd.Series) -> np.ndarray:
    """Words per text (see WORDS_NOTE)."""
    return np.fromiter(map(count_words, texts), dtype=np.int64, count=len(texts))


def nonempty_inputs(source: Source) -> pd.Series:
    inputs = source.records["input"]
    return inputs[inputs.str.strip() != ""]


def table1(source: Source) -> dict[str, Any]:
    """The paper's Table 1 for the source: distinct instructions (for a run: the accepted ones),
    classification instructions (None when the source does not say), records, records with an empty
    input, and average words of instructions, non-empty inputs and outputs."""
    records, instructions = source.records, source.instructions
    flags = instructions["is_classification"]
    nonempty = nonempty_inputs(source)
    return {
        "instructions": len(instructions),
        "classification_instructions": int(flags.eq(True).sum()) if flags.notna().all() else None,
        "instances": len(records),
        "empty_input_instances": int(len(records) - len(nonempty)),
        "avg_words": {
            "instruction": _mean(word_counts(instructions["instruction"])),
            "input_nonempty": _mean(word_counts(nonempty)),
            "output": _mean(word_counts(records["output"])),
        },
    }


def _mean(values: np.ndarray) -> float | None:
    return round(float(values.mean()), 2) if len(values) else None


def funnel(source: Source) -> dict[str, Any] | None:
    """Where a run's candidates and instances went, counted from its files; requests, tokens and
    retries from stats.json (they are not in the files)."""
    run = source.run
    if run is None:
        return None
    rejected = Counter(r["reason"] for r in run.rejected)
    dropped: Counter = Counter()
    generated = 0
    for r in run.instances:
        dropped.update(r.get("dropped", {}))
        generated += len(r["instances"]) + bool(r.get("truncated"))
    stats = run.stats or {}
    accepted = len(run.machine_instructions)
    return {
        "candidates": accepted + sum(n for reason, n in rejected.items() if reason != "truncated"),
        "accepted": accepted,
        "rejected": dict(rejected.most_common()),
        "classification": dict(
            Counter("yes" if r["is_classification"] else "no" for r in run.classification)
        ),  # fmt: skip
        "instances": {
            "tasks": len(run.instances),
            "generated": generated,
            "kept": len(source.records),
            "dropped": dict(dropped.most_common()),
        },
        "near_duplicates": dropped.get("near_duplicate", 0),
        "requests": stats.get("requests", {}),
        "tokens": stats.get("tokens", {}),
        "retries": stats.get("retries", {}),
        "wall_seconds": stats.get("wall_seconds"),
    }


def novelty_yield(source: Source, windows: int = 40) -> dict[str, Any] | None:
    """Accepted ÷ candidates per window of consecutive candidates, in the order the run made them
    (by request): a falling curve means the seed set is running dry."""
    run = source.run
    if run is None:
        return None
    rows = [(r["request"], 1) for r in run.machine_instructions]
    rows += [(r["request"], 0) for r in run.rejected if r["reason"] != "truncated"]
    if not rows:
        return {"window": 0, "points": []}
    frame = pd.DataFrame(rows, columns=["request", "accepted"]).sort_values("request", kind="stable")
    window = max(10, math.ceil(len(frame) / windows))
    groups = frame["accepted"].reset_index(drop=True).groupby(lambda i: i // window)
    ends = groups.size().cumsum()
    return {
        "window": window,
        "points": [[int(end), round(float(y), 4)] for end, y in zip(ends, groups.mean(), strict=True)],
    }


def rouge_to_seed(instructions: list[str], seeds: list[str], bins: int = 20) -> dict[str, Any]:
    """ROUGE-L F of each instruction to its most similar seed (the paper's Fig. 4), through the
    project's exact ROUGE-L index; the tokenizer is chosen as the run's filter would choose it."""
    tokenizer = default_tokenizer(seeds + instructions[:2000])
    index = RougeIndex(tokenizer=TOKENIZERS[tokenizer])
    for text in seeds:
        index.add(text)
    _, scores = index.most_similar_many(instructions)
    counts, edges = np.histogram(scores, bins=bins, range=(0.0, 1.0))
    return {
        "mean": round(float(scores.mean()), 4) if len(scores) else None,
        "median": round(float(np.median(scores)), 4) if len(scores) else None,
        "histogram": {"edges": [round(float(e), 2) for e in edges], "counts": counts.tolist()},
        "tokenizer": tokenizer,
        "seeds": len(seeds),
    }


def length_histograms(source: Source, bins: int = 30) -> dict[str, Any]:
    """Word-count histograms of instructions, non-empty inputs and outputs (the paper's Fig. 5);
    the last bin also holds everything longer than the 99th percentile."""
    columns = {
        "instruction": source.instructions["instruction"],
        "input_nonempty": nonempty_inputs(source),
        "output": source.records["output"],
    }
    out = {}
    for name, texts in columns.items():
        words = word_counts(texts)
        if not len(words):
            out[name] = {"edges": [], "counts": [], "max": None}
            continue
        top = max(1, math.ceil(float(np.percentile(words, 99))))
        width = max(1, math.ceil(top / bins))
        edges = np.arange(0, top + width + 1, width)
        counts, _ = np.histogram(np.minimum(words, edges[-1] - 1), bins=edges)
        out[name] = {"edges": edges.tolist(), "counts": counts.tolist(), "max": int(words.max())}
    return out


def review_sample(source: Source, size: int, seed: int) -> pd.DataFrame:
    """`size` records drawn at random (seeded), in file order, with an empty column for each of the
    paper's four judgments (Table 2: valid instruction, appropriate input, correct output, all valid)."""
    records = source.records
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(records), size=min(size, len(records)), replace=False))
    sample = records.iloc[picked][["id", "instruction", "input", "output"]].reset_index(drop=True)
    for column in REVIEW_COLUMNS:
        sample[column] = ""
    return sample
