"""ROUGE-L novelty filter: rouge_score brute force against selfinstruct's RougeIndex.

Both run the reference rule (candidates in order; rejected when ROUGE-L F > 0.7 against any kept
one) on the same Alpaca stream in one run, with identical decisions asserted; then the index alone
on 5K, 20K, the full 52K Alpaca set and a 100K stream (Alpaca plus edited copies), each in a fresh
process so that its peak memory is its own. Needs ../shared/data/alpaca_data_52k.json.

    .venv/bin/python scripts/bench_rouge.py            # the table in docs/benchmarks.md
    .venv/bin/python scripts/bench_rouge.py --quick    # smaller sizes
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

from rouge_score.rouge_scorer import RougeScorer, _score_lcs

from selfinstruct.filters.rouge_index import RougeIndex
from selfinstruct.filters.tokenizers import rouge_tokens

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpaca_data_52k.json"


def alpaca() -> list[str]:
    if not DATA.exists():
        sys.exit(f"{DATA}: not found — the benchmark reads the Alpaca data from ../shared/data")
    return [r["instruction"] for r in json.loads(DATA.read_text())]


def stream(size: int) -> list[str]:
    """The Alpaca instructions, then edited copies of them interleaved, up to `size` items."""
    base = alpaca()
    if size <= len(base):
        return base[:size]
    rng, out = random.Random(0), list(base)
    for _ in range(size - len(base)):
        words = rng.choice(base).split()
        if len(words) > 2:
            del words[rng.randrange(len(words))]
        out.insert(rng.randrange(len(out) + 1), " ".join(words))
    return out


def brute_force(texts: list[str]) -> list[bool]:
    """Self-Instruct's loop: RougeScorer.score(new, old) against every kept instruction."""
    scorer = RougeScorer(["rougeL"], use_stemmer=False)
    kept: list[str] = []
    decisions = []
    for text in texts:
        keep = all(scorer.score(text, k)["rougeL"].fmeasure <= 0.7 for k in kept)
        decisions.append(keep)
        if keep:
            kept.append(text)
    return decisions


def brute_force_pretokenized(texts: list[str]) -> list[bool]:
    """Alpaca's loop: the pool tokenized once, rouge_score's LCS scoring per pair."""
    kept: list[list[str]] = []
    decisions = []
    for text in texts:
        tokens = rouge_tokens(text)
        keep = all(_score_lcs(tokens, k).fmeasure <= 0.7 for k in kept)
        decisions.append(keep)
        if keep:
            kept.append(tokens)
    return decisions


def indexed(texts: list[str]) -> list[bool]:
    index = RougeIndex(0.7)
    return [index.check(t) for t in texts]


def timed(fn, texts):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(texts)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def one(size: int) -> None:
    """Child process: the index alone on one stream size; prints a JSON line."""
    texts = stream(size)
    decisions, wall, cpu = timed(indexed, texts)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"size": size, "wall": wall, "cpu": cpu, "rejected": decisions.count(False), "peak_mb": peak}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="500-item comparison; 5K and 20K only.")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(args.one)

    n = 500 if args.quick else 2000
    texts = stream(n)
    reference, _, brute_cpu = timed(brute_force, texts)
    pretokenized, _, pre_cpu = timed(brute_force_pretokenized, texts)
    ours, _, ours_cpu = timed(indexed, texts)
    assert ours == reference == pretokenized, "decisions differ from rouge_score brute force"
    print(f"{n} Alpaca instructions, identical decisions ({reference.count(False)} rejected):")
    print(f"  rouge_score brute force, score() per pair (Self-Instruct) {brute_cpu:8.2f} CPU-s")
    print(f"  rouge_score brute force, pre-tokenized (Alpaca)           {pre_cpu:8.2f} CPU-s")
    print(f"  RougeIndex                                                {ours_cpu:8.3f} CPU-s")
    print(f"  ratio: {brute_cpu / ours_cpu:.0f}x (score), {pre_cpu / ours_cpu:.0f}x (pre-tokenized)\n")

    print("| stream | wall | CPU | rejected | peak memory |\n| ---: | ---: | ---: | ---: | ---: |")
    for size in [5000, 20000] + ([] if args.quick else [52002, 100000]):
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(size)], capture_output=True, text=True, check=True
        )
        r = json.loads(out.stdout)
        print(
            f"| {size:,} | {r['wall']:.1f} s | {r['cpu']:.1f} s | {r['rejected']:,} | {r['peak_mb']:.0f} MB |"
        )


if __name__ == "__main__":
    main()
