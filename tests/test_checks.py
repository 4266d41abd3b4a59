"""The record checks (instance rules, language rule, near-duplicates) in a worker process: the same
decisions as in the run's own process, handed back in submission order, and a worker that never
outlives its run."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from fast_endpoint import FastEndpoint
from test_dispatch import check_no_duplicates, wait_for
from test_faults import complete_lines

from selfinstruct.checks import WORKER_FROM, CheckSettings, RecordChecks

SETTINGS = CheckSettings(max_instances=3, language="en", near_duplicate_threshold=0.9)
WORDS = "river stone garden window paper light music market winter letter".split()


def tasks(n: int, seed: int = 0) -> list[dict]:
    """Stage records with every kind of drop: inputs shared across tasks (near-duplicates), Chinese
    outputs (wrong language), empty outputs, input equal to output, too many instances."""
    rng = random.Random(seed)
    out = []
    for t in range(n):
        instruction = f"Describe the {rng.choice(WORDS)} and the {rng.choice(WORDS)} in one sentence."
        instances = []
        for _ in range(rng.randint(1, 5)):
            words = " ".join(rng.choice(WORDS) for _ in range(8))
            kind = rng.random()
            if kind < 0.15:
                output = "这是一个关于河流和石头的很长的中文句子，用来测试语言规则是否有效。"
            elif kind < 0.2:
                output = ""
            elif kind < 0.25:
                output = words
            else:
                output = f"The {words} are described here in plain English words."
            instances.append({"input": words if rng.random() < 0.7 else "", "output": output})
        record = {"id": f"machine_task_{t}", "instruction": instruction, "instances": instances}
        out.append(record | {"truncated": t % 7 == 0})
    return out


async def check_all(records: list[dict], worker: bool) -> tuple[list, list]:
    seen: list = []
    checks = RecordChecks(SETTINGS, lambda r, _, unique, drops: seen.append((r["id"], unique, drops)), worker)
    try:
        futures = []
        for n, record in enumerate(records):
            futures.append(checks.submit(record))
            if n % 13 == 0:
                await asyncio.sleep(0)  # tasks arrive over several turns of the loop, as in a run
        results = await asyncio.gather(*futures)
    finally:
        checks.close()
    return seen, results


def test_the_worker_decides_like_the_run_process_and_hands_tasks_back_in_order():
    records = tasks(400)
    inline_seen, inline = asyncio.run(check_all(records, worker=False))
    worker_seen, in_worker = asyncio.run(check_all(records, worker=True))
    assert worker_seen == inline_seen and in_worker == inline
    assert [i for i, _, _ in worker_seen] == [r["id"] for r in records]
    drops = Counter()
    for _, _, d in inline_seen:
        drops.update(d)
    # Every rule had something to do, or the comparison proves little.
    rules = {"wrong_language", "near_duplicate", "empty_output", "truncated", "over_max_instances"}
    assert rules <= drops.keys()


def test_a_run_killed_while_its_worker_checks_resumes_exactly_and_leaves_no_process(tmp_path: Path):
    out, target = tmp_path / "run", WORKER_FROM + 100  # large enough to check in a worker
    with FastEndpoint(latency=0.002, seed=3) as fast:
        cmd = [
            sys.executable, "-m", "selfinstruct", "run", "--backend", "openai", "--base-url", fast.url,
            "-n", str(target), "-o", str(out), "--seed", "5", "--no-progress", "--concurrency", "16",
        ]  # fmt: skip
        for kill_at in (40, 300):  # instance records written when it is killed
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            wait_for(lambda: len(complete_lines(out / "instances.jsonl")) >= kill_at, 120, proc)  # noqa: B023
            workers = children(proc.pid)
            assert workers, "no worker process"
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            deadline = time.monotonic() + 10
            while any(alive(pid) for pid in workers):
                assert time.monotonic() < deadline, "the worker outlived its run"
                time.sleep(0.05)
        # Finished with the checks in its own process: the replay decides as the worker did.
        result = subprocess.run(cmd + ["--no-check-in-worker"], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        records = check_no_duplicates(out)
        # Every answer received is saved; only the requests in flight when a kill landed (at most
        # --concurrency each time) were answered and lost with the run.
        assert len(records["responses"]) <= fast.prompts <= len(records["responses"]) + 2 * 16
    assert len(records["machine_instructions"]) == len(records["instances"]) == target
    # Each task's dataset records are exactly those its stage record says were kept: none written
    # twice by the replay, none lost to the kills.
    written = Counter(r["id"].rsplit("-", 1)[0] for r in records["dataset"])
    for r in records["instances"]:
        assert written[r["id"]] == len(r["instances"]) + r["truncated"] - sum(r["dropped"].values()), r["id"]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["dataset_records"] == len(records["dataset"]) and stats["resumes"] == 2


def children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("worker", [False, True])
def test_a_check_that_fails_fails_its_task_instead_of_hanging(worker: bool):
    bad = tasks(1)[0] | {"instances": [{"input": "an instance without its output"}]}

    async def check() -> None:
        checks = RecordChecks(SETTINGS, lambda *_: None, worker)
        try:
            with pytest.raises(ValueError, match="output"):  # pydantic's ValidationError
                await asyncio.wait_for(checks.submit(bad), 60)
        finally:
            checks.close()

    asyncio.run(check())


def test_a_worker_that_dies_fails_the_tasks_it_had_with_one_clear_error():
    async def check() -> None:
        checks = RecordChecks(SETTINGS, lambda *_: None, worker=True)
        try:
            first, second = tasks(2)
            await asyncio.wait_for(checks.submit(first), 60)
            for pid in checks._pool._processes:
                os.kill(pid, signal.SIGKILL)
            with pytest.raises(RuntimeError, match="the worker process that checks records stopped"):
                await asyncio.wait_for(checks.submit(second), 60)
        finally:
            checks.close()

    asyncio.run(check())
