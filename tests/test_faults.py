"""A flaky endpoint and killed runs, against the real vLLM CPU server of the session.

The CLI runs as a subprocess through a fault-injecting proxy; a run killed with SIGKILL at random
points is resumed until it finishes, and its files are checked after every step.
"""

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from fault_proxy import FaultProxy

pytestmark = pytest.mark.slow
FILES = ("machine_instructions", "rejected", "classification", "instances", "dataset", "responses")

# Short generations keep the runs quick on a CPU; the timeout leaves normal requests room.
CONFIG = """
concurrency = 4
[instructions]
max_tokens = 96
[instances]
max_tokens = 96
[backend]
timeout = 45
max_attempts = 10
"""


def command(base_url: str, out: Path, config: Path, n: int) -> list[str]:
    return [
        sys.executable, "-m", "selfinstruct", "run", "--config", str(config), "--backend", "openai",
        "--base-url", base_url, "-n", str(n), "-o", str(out), "--seed", "11", "--no-progress",
    ]  # fmt: skip


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(CONFIG)
    return path


def complete_lines(path: Path) -> list[str]:
    """The records a reader sees: whole, newline-terminated lines."""
    if not path.exists():
        return []
    return [ln for ln in path.read_text(errors="replace").split("\n")[:-1] if ln.strip()]


def check_run_dir(out: Path) -> dict[str, list[dict]]:
    records = {}
    for name in FILES:
        path = out / f"{name}.jsonl"
        lines = complete_lines(path)
        records[name] = [json.loads(ln) for ln in lines]  # every whole line is valid JSON
    for name in ("machine_instructions", "classification", "instances"):
        ids = [r["id"] for r in records[name]]
        assert len(ids) == len(set(ids)), f"duplicate ids in {name}"
    texts = [r["instruction"] for r in records["machine_instructions"]]
    assert len(texts) == len(set(texts)), "duplicate accepted instructions"
    dataset_ids = [r["id"] for r in records["dataset"]]
    assert len(dataset_ids) == len(set(dataset_ids)), "duplicate dataset records"
    keys = [r["key"] for r in records["responses"]]
    assert len(keys) == len(set(keys)), "a request was paid for twice"
    return records


def test_killed_runs_resume_to_exactly_the_target(vllm_server, tmp_path: Path, config: Path):
    out, target, rng = tmp_path / "run", 24, random.Random(5)
    seen: dict[str, set[str]] = {name: set() for name in FILES}
    kills = attempts = 0
    while True:
        attempts += 1
        assert attempts < 30, "the run never finished"
        proc = subprocess.Popen(
            command(vllm_server.base_url, out, config, target),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        if kills < 5:
            # Kill at a random point of real work: after 1-8 new responses, plus up to a second.
            responses = out / "responses.jsonl"
            goal = len(complete_lines(responses)) + rng.randint(1, 8)
            while proc.poll() is None and len(complete_lines(responses)) < goal:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.0))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
        stdout, stderr = proc.communicate(timeout=900)
        if proc.returncode not in (0, -signal.SIGKILL):
            raise AssertionError(f"run failed ({proc.returncode}): {stderr[-2000:]}")
        records = check_run_dir(out)
        for name in FILES:  # nothing written before a kill is ever lost
            lines = set(complete_lines(out / f"{name}.jsonl"))
            assert seen[name] <= lines, f"records lost from {name}"
            seen[name] = lines
        if proc.returncode == 0:
            break
    assert kills >= 5
    assert len(records["machine_instructions"]) == target
    assert {r["id"] for r in records["instances"]} == {r["id"] for r in records["machine_instructions"]}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["instructions"]["accepted"] == target
    assert stats["dataset_records"] == len(records["dataset"])
    assert stats["resumes"] == kills  # every restart found responses of the killed run to go on from
    print(
        f"\nkill test: {kills} kills, {attempts} runs, {target} instructions, "
        f"{len(records['dataset'])} records, {stats['replayed_responses']} replayed responses, duplicates: 0"
    )


def test_a_run_completes_through_a_flaky_endpoint(vllm_server, tmp_path: Path, config: Path):
    out = tmp_path / "run"
    # One prompt per request, so that each injected fault costs exactly one retry (counted below);
    # faults on shared requests are covered by the kill test and tests/test_dispatch.py.
    with FaultProxy(vllm_server.base_url, rate=0.2, stall_seconds=47, seed=3) as proxy:
        result = subprocess.run(
            command(proxy.url, out, config, 12) + ["--max-batch", "1"],
            capture_output=True,
            text=True,
            timeout=900,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    check_run_dir(out)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["instructions"]["accepted"] == 12
    retries = stats["retries"]
    # Each injected fault costs one retry of its kind, unless it hit a request the run cancelled
    # once it had reached its target.
    kinds = {"429": "rate_limited", "500": "http_500", "503": "http_503", "drop": "connection",
             "stall": "timeout", "truncated": "invalid_body", "invalid_json": "invalid_body",
             "empty_choices": "empty_choices", "html": "invalid_body",
             "null_text": "invalid_body"}  # fmt: skip
    expected = Counter()
    for fault, n in proxy.injected.items():
        expected[kinds[fault]] += n
    assert set(retries) <= set(expected) and all(retries[k] <= expected[k] for k in retries)
    assert sum(retries.values()) >= sum(expected.values()) - 4 > 0  # at most `concurrency` cancelled
    print(f"\nfault run: injected {dict(proxy.injected)}, retries {retries}")


def test_an_endpoint_that_stays_down_ends_the_run_resumably(vllm_server, tmp_path: Path, config: Path):
    out = tmp_path / "run"
    with FaultProxy(vllm_server.base_url, rate=0.0, kinds=["503"]) as proxy:
        proc = subprocess.Popen(
            command(proxy.url, out, config, 10), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 300
        while len(complete_lines(out / "machine_instructions.jsonl")) < 3:
            assert time.monotonic() < deadline and proc.poll() is None, "no progress before the outage"
            time.sleep(0.2)
        proxy.rate = 1.0  # the endpoint goes down for good
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 2
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and "http_503" in last and "saved" in last
        assert "Traceback" not in stderr
        accepted = complete_lines(out / "machine_instructions.jsonl")
        assert len(accepted) >= 3

        proxy.rate = 0.0  # back up: the same command resumes and finishes
        result = subprocess.run(
            command(proxy.url, out, config, 10), capture_output=True, text=True, timeout=900
        )
    assert result.returncode == 0, result.stderr[-2000:]
    records = check_run_dir(out)
    assert len(records["machine_instructions"]) == 10
    assert set(accepted) <= set(complete_lines(out / "machine_instructions.jsonl"))


def test_resume_with_other_settings_is_refused(tmp_path: Path, config: Path):
    out = tmp_path / "run"
    (out).mkdir()
    (out / "config.json").write_text(json.dumps({"rouge_threshold": 0.5, "seed": 11}))
    result = subprocess.run(
        command("http://127.0.0.1:9/v1", out, config, 4), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "rouge_threshold" in result.stderr and "--allow-changed-settings" in result.stderr
    assert json.loads((out / "config.json").read_text()) == {"rouge_threshold": 0.5, "seed": 11}
