"""The coordinator's own throughput: accepted instructions per second of process wall, against an
OpenAI-compatible endpoint that answers at once (tests/fast_endpoint.py, in its own process on
the same machine), so that only the run's own cost shows.

    .venv/bin/python scripts/bench_coordinator.py                      # 5K, 20K and 100K
    .venv/bin/python scripts/bench_coordinator.py --targets 5000 20000 --profile-target 5000

Each target is one `python -m selfinstruct run -n N --concurrency C` from start to exit (start-up,
all three stages and the files included). The rate of each target is printed with the ratio to the
first target's and the CPU seconds the run and the endpoint spent per 1,000 accepted; then the
first target again with `--max-batch 1` (one prompt per HTTP request: the baseline for shared
requests), the largest target up to 20K with `--no-check-in-worker` (the record checks in the run's
own process: the baseline for the worker) alternated with more runs as they were, best of each,
and at the end a profile of one run (cProfile of the run's own process; it slows the run down, so
its rate is not one of the figures), grouped by where the time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pstats
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Where the time goes, by the file a function lives in (first match wins).
AREAS = [
    ("HTTP client (openai, httpx2, aiohttp)",
     ("openai/", "httpx2/", "httpcore2/", "aiohttp/", "yarl/", "multidict/", "generation/")),
    ("ROUGE-L index", ("selfinstruct/filters/rouge",)),
    ("near-duplicate MinHash (datasketch)", ("datasketch/", "selfinstruct/filters/instances.py")),
    ("heuristic filters", ("selfinstruct/filters/heuristics.py", "selfinstruct/filters/tokenizers.py")),
    ("prompts and parsers", ("selfinstruct/prompts.py",)),
    ("records and files (pydantic, JSON, writes)",
     ("pydantic", "json/", "selfinstruct/records.py", "selfinstruct/tasks.py", "selfinstruct/cache.py")),
    ("pipeline, stats, progress",
     ("selfinstruct/pipeline.py", "selfinstruct/stats.py", "selfinstruct/progress.py", "tqdm/")),
    ("asyncio event loop", ("asyncio/", "uvloop")),
    ("imports and start-up", ("<frozen", "importlib")),
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (its own, not its children's), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_endpoint() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "fast_endpoint.py"), "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()  # "serving URL" once it listens
    if not line.startswith("serving"):
        raise SystemExit(f"the endpoint did not start: {line!r}")
    return proc, line.split()[1]


def run(
    url: str, target: int, concurrency: int, out: Path, profile: Path | None = None, extra: tuple = ()
) -> dict:
    """One run from start to exit: its wall time, its CPU time (with its worker's) and that of its
    own process (read from /proc until it exits, so up to 0.1 s short), and its stats.json."""
    prefix = [sys.executable] + (["-m", "cProfile", "-o", str(profile)] if profile else [])
    cmd = prefix + [
        "-m", "selfinstruct", "run", "--backend", "openai", "--base-url", url, "-n", str(target),
        "--concurrency", str(concurrency), "--no-progress", "-o", str(out), *extra,
    ]  # fmt: skip
    before = os.times()
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, text=True, cwd=ROOT)
        own = 0.0
        while proc.poll() is None:
            with contextlib.suppress(OSError, IndexError):
                own = cpu_seconds(proc.pid)
            time.sleep(0.1)
        wall = time.perf_counter() - start
        after = os.times()
        if proc.returncode != 0:
            stderr.seek(0)
            raise SystemExit(f"run -n {target} failed ({proc.returncode}): {stderr.read()[-2000:]}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {"wall": wall, "cpu": cpu, "own": own, "stats": json.loads((out / "stats.json").read_text())}


def profile_summary(path: Path, top: int) -> str:
    stats = pstats.Stats(str(path))
    total = stats.total_tt
    areas: dict[str, float] = {}
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():
        area = next((name for name, parts in AREAS if any(p in filename for p in parts)), "other")
        areas[area] = areas.get(area, 0.0) + tottime
    lines = [f"profile: {total:.1f} s of CPU in the run's own process (under cProfile), by area:"]
    for area, seconds in sorted(areas.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {seconds / total:6.1%}  {seconds:6.2f} s  {area}")
    lines.append(f"top {top} functions by own time:")
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]
    for (filename, line, name), (_, calls, tottime, _, _) in rows:
        where = filename.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
        lines.append(f"  {tottime:6.2f} s  {calls:>9,} calls  {name} ({where}:{line})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", type=int, nargs="+", default=[5000, 20000, 100000])
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--profile-target", type=int, default=20000, help="0: no profile run")
    parser.add_argument("--top", type=int, default=15, help="Functions in the profile summary.")
    parser.add_argument(
        "--repeats", type=int, default=2, help="Runs of each setting in the worker's baseline comparison."
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="Skip the baseline runs (--max-batch 1, --no-check-in-worker).",
    )
    args = parser.parse_args()

    endpoint, url = start_endpoint()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-coordinator-") as tmp:
            first = None
            timed: dict[int, float] = {}
            print(f"instant endpoint at {url}; concurrency {args.concurrency}; {os.cpu_count()} cores")
            for target in args.targets:
                endpoint_cpu = cpu_seconds(endpoint.pid)
                r = run(url, target, args.concurrency, Path(tmp) / f"run-{target}")
                endpoint_cpu = cpu_seconds(endpoint.pid) - endpoint_cpu
                rate = target / r["wall"]
                timed[target] = r["wall"]
                first = first or rate
                s = r["stats"]
                requests = sum(s["requests"].values())
                tokens = s["tokens"]["prompt"] + s["tokens"]["completion"]
                print(
                    f"-n {target:>7,}: {rate:7.0f} accepted instructions/s ({rate / first:.2f} of the first),"
                    " "
                    f"{r['wall']:6.1f} s wall; CPU per 1,000 accepted: run {1000 * r['cpu'] / target:.2f} s "
                    f"(its own process {1000 * r['own'] / target:.2f} s, the checks' worker "
                    f"{1000 * (r['cpu'] - r['own']) / target:.2f} s), "
                    f"endpoint {1000 * endpoint_cpu / target:.2f} s; {requests / target:.2f} prompts and "
                    f"{tokens / target:.0f} tokens per accepted instruction",
                    flush=True,
                )
            if not args.no_baseline:
                target = args.targets[0]
                r = run(url, target, args.concurrency, Path(tmp) / "baseline", extra=("--max-batch", "1"))
                rate = target / r["wall"]
                print(
                    f"-n {target:>7,} with --max-batch 1 (one prompt per request): {rate:7.0f} accepted "
                    f"instructions/s, {r['wall']:.1f} s wall, run CPU {1000 * r['cpu'] / target:.2f} s per "
                    f"1,000; shared requests are {first / rate:.2f}x faster",
                    flush=True,
                )
            if not args.no_baseline:
                # The host's speed drifts between runs: the two settings alternate, best of each.
                target = max((t for t in args.targets if t <= 20000), default=args.targets[0])
                walls: dict[bool, list[float]] = {True: [timed[target]], False: []}
                for n in range(2 * args.repeats - 1):
                    worker = n % 2 == 1
                    extra = () if worker else ("--no-check-in-worker",)
                    walls[worker].append(
                        run(url, target, args.concurrency, Path(tmp) / f"w{n}", extra=extra)["wall"]
                    )
                best = {worker: target / min(w) for worker, w in walls.items()}
                print(
                    f"-n {target:>7,}, the record checks in a worker against --no-check-in-worker (in the "
                    f"run's own process), alternated, best of {args.repeats}: {best[True]:7.0f} against "
                    f"{best[False]:.0f} accepted instructions/s; the worker makes the run "
                    f"{best[True] / best[False]:.2f}x faster",
                    flush=True,
                )
            if args.profile_target:
                profile = Path(tmp) / "run.prof"
                run(url, args.profile_target, args.concurrency, Path(tmp) / "profiled", profile)
                print(f"\n-n {args.profile_target:,} under cProfile")
                print(profile_summary(profile, args.top))
    finally:
        endpoint.terminate()
        endpoint.wait()


if __name__ == "__main__":
    main()
