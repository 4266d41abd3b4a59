"""ROUGE-L novelty filter: rouge_score brute force against selfinstruct's RougeIndex.

Both run the reference rule (candidates in order; rejected when ROUGE-L F > 0.7 against any kept
one) on the same stream in one run, with identical decisions asserted: the first 2,000 Alpaca
instructions (and, with --stress, the 5,000-item stress stream with 1,624 near-duplicates). The
index's CPU time is the median of five runs; brute force runs once. Then the index alone on 5K, 20K,
the full 52K Alpaca set and a 100K stream (Alpaca plus edited copies), each in a fresh process that
reads only the stream, so that its peak memory is the index's and the texts'. Needs ../shared/data.

    .venv/bin/python scripts/bench_rouge.py            # the tables in docs/benchmarks.md
    .venv/bin/python scripts/bench_rouge.py --stress   # also the 5K stress stream (+5 minutes)
    .venv/bin/python scripts/bench_rouge.py --quick    # smaller sizes
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selfinstruct.filters.rouge_index import RougeIndex

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def read(name: str):
    if not (DATA / name).exists():
        sys.exit(f"{DATA / name}: not found — the benchmark reads its data from ../shared/data")
    return json.loads((DATA / name).read_text())


def alpaca() -> list[str]:
    return [r["instruction"] for r in read("alpaca_data_52k.json")]


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
    from rouge_score.rouge_scorer import RougeScorer  # here, so that --one does not load nltk

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
    from rouge_score.rouge_scorer import _score_lcs
    from rouge_score.tokenizers import DefaultTokenizer

    tokenizer = DefaultTokenizer(use_stemmer=False)
    kept: list[list[str]] = []
    decisions = []
    for text in texts:
        tokens = tokenizer.tokenize(text)
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


def one(path: str) -> None:
    """Child process: the index alone on one stream (a JSON list in a file); prints a JSON line.
    Its peak memory is the interpreter, the texts and the index."""
    texts = json.loads(Path(path).read_text())
    decisions, wall, cpu = timed(indexed, texts)
    print(json.dumps({"wall": wall, "cpu": cpu, "rejected": decisions.count(False), "peak_mb": peak_mb()}))


def peak_mb() -> float:
    """This process's peak resident memory in MB: VmHWM, which starts afresh at exec (ru_maxrss
    would carry over the parent's peak from before the fork)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compare(name: str, texts: list[str]) -> None:
    """Brute force (both loops) and the index on one stream; identical decisions asserted."""
    reference, _, brute_cpu = timed(brute_force, texts)
    pretokenized, _, pre_cpu = timed(brute_force_pretokenized, texts)
    runs = [timed(indexed, texts) for _ in range(5)]
    ours, ours_cpu = runs[0][0], statistics.median(cpu for _, _, cpu in runs)
    assert ours == reference == pretokenized, "decisions differ from rouge_score brute force"
    print(f"{name}, {len(texts):,} instructions, identical decisions ({reference.count(False):,} rejected):")
    print(f"  rouge_score brute force, score() per pair (Self-Instruct) {brute_cpu:8.2f} CPU-s")
    print(f"  rouge_score brute force, pre-tokenized (Alpaca)           {pre_cpu:8.2f} CPU-s")
    print(f"  RougeIndex (median of 5)                                  {ours_cpu:8.3f} CPU-s")
    print(f"  ratio: {brute_cpu / ours_cpu:.0f}x (score), {pre_cpu / ours_cpu:.0f}x (pre-tokenized)\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="500-item comparison; 5K and 20K only.")
    parser.add_argument("--stress", action="store_true", help="Also compare on the 5K stress stream.")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(args.one)

    compare("Alpaca", stream(500 if args.quick else 2000))
    if args.stress:
        compare("Stress stream", read("stress_stream_5000.json")["stream"])

    print("| stream | wall | CPU | rejected | peak memory |\n| ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for size in [5000, 20000] + ([] if args.quick else [52002, 100000]):
            path = Path(tmp) / f"{size}.json"
            path.write_text(json.dumps(stream(size)))
            out = subprocess.run(
                [sys.executable, __file__, "--one", str(path)], capture_output=True, text=True, check=True
            )
            r = json.loads(out.stdout)
            cells = f"{r['wall']:.1f} s | {r['cpu']:.1f} s | {r['rejected']:,} | {r['peak_mb']:.0f} MB"
            print(f"| {size:,} | {cells} |")


if __name__ == "__main__":
    main()
