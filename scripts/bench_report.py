"""Benchmark `selfinstruct report` on the whole Alpaca data (52,002 records), parsing included.

    .venv/bin/python scripts/bench_report.py                      # ../shared/data/alpaca_data_52k.json
    .venv/bin/python scripts/bench_report.py --data FILE_OR_RUN_DIR

Runs the real command in a subprocess and prints its wall time and the peak memory of its whole
process tree (the parser's worker processes included, sampled every 50 ms), the time of each phase
as report.json records it, and two ratios measured in this process on the same instructions: the
ROUGE-L nearest-seed pass against a per-instruction `most_similar` loop, and the parser's worker
pool against one process (on a slice, so that the baseline stays short).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "data" / "alpaca_data_52k.json"


def run_report(data: Path, out: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB of the command and its children)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfinstruct", "report", str(data), "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    parent, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            tree = [parent, *parent.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    wall = time.perf_counter() - started
    stdout, stderr = proc.communicate()
    if proc.returncode:
        sys.exit(f"report failed ({proc.returncode}):\n{stderr[-2000:]}")
    print(stdout.strip())
    return wall, peak / 2**20


def ratios(data: Path) -> None:
    from selfinstruct.filters.rouge_index import RougeIndex
    from selfinstruct.report.verbs import verb_noun
    from selfinstruct.resources import resource_path
    from selfinstruct.sources import load_source
    from selfinstruct.tasks import load_seeds

    instructions = load_source(data).instructions["instruction"].tolist()
    index = RougeIndex()
    for task in load_seeds(resource_path("seeds/en.jsonl")):
        index.add(task.instruction)
    sample = instructions[:10_000]
    t = time.perf_counter()
    loop = [index.most_similar(text)[1] for text in sample]
    baseline = time.perf_counter() - t
    t = time.perf_counter()
    _, scores = index.most_similar_many(sample)
    many = time.perf_counter() - t
    assert list(scores) == loop, "most_similar_many disagrees with most_similar"
    print(f"ROUGE-L nearest seed, {len(sample):,} instructions: most_similar loop {baseline:.2f} s, "
          f"most_similar_many {many:.2f} s -> {baseline / many:.1f}x")  # fmt: skip
    part = instructions[:4000]
    t = time.perf_counter()
    one = verb_noun(part, "en", processes=1)
    single = time.perf_counter() - t
    t = time.perf_counter()
    pooled = verb_noun(part, "en")
    pool = time.perf_counter() - t
    assert one.top == pooled.top and one.pairs == pooled.pairs
    print(f"verb-object parse, {len(part):,} instructions: one process {single:.2f} s, "
          f"worker pool {pool:.2f} s -> {single / pool:.2f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT)
    parser.add_argument("--no-ratios", action="store_true", help="Only time the command.")
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"{args.data}: not there — pass --data with an instruction file or run directory")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report"
        wall, peak = run_report(args.data, out)
        report = json.loads((out / "report.json").read_text())
    print(f"report of {report['instances']:,} records: {wall:.1f} s wall, peak {peak:,.0f} MiB "
          f"(process tree), {psutil.cpu_count()} cores")  # fmt: skip
    print("phases (s):", json.dumps(report["seconds"]))
    if not args.no_ratios:
        ratios(args.data)


if __name__ == "__main__":
    main()
