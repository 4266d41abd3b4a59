"""Token ledger, prices, token and cost budgets, and `run --dry-run`.

The CLI runs as a subprocess against the instant endpoint of tests/fast_endpoint.py (its usage
counts the words of the prompt and of the answer), and once against the real vLLM CPU server.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest
from clirun import selfinstruct
from fast_endpoint import FastEndpoint
from test_faults import check_run_dir

from selfinstruct.progress import Progress
from selfinstruct.stats import RunStats

STOP_LINE = re.compile(
    r"stopped: the (token|cost) budget is spent — .* used \(.*\); everything received is saved; "
    r"run the same command with a larger --(token|cost)-budget to continue"
)


def run(url: str, out: Path, n: int, *extra: str):
    return selfinstruct(
        "run", "--backend", "openai", "--base-url", url, "-n", str(n), "-o", str(out), "--seed", "3",
        "--no-progress", *extra,
    )  # fmt: skip


def stop_line(stdout: str) -> str:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("stopped:")]
    assert len(lines) == 1, stdout
    assert STOP_LINE.fullmatch(lines[0]), lines[0]
    return lines[0]


def ledger(out: Path) -> tuple[dict, dict[str, Counter]]:
    """stats.json, and the tokens of responses.jsonl by stage."""
    by_stage: dict[str, Counter] = {}
    for line in (out / "responses.jsonl").read_text().splitlines():
        r = json.loads(line)
        by_stage.setdefault(r["stage"], Counter()).update(
            requests=1, prompt=r["prompt_tokens"], completion=r["completion_tokens"]
        )
    return json.loads((out / "stats.json").read_text()), by_stage


def count_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def check_ledger(out: Path, prices: tuple[float, float] | None = None) -> int:
    """stats.json's tokens are the sum of responses.jsonl, by stage and in total; returns the total."""
    stats, by_stage = ledger(out)
    assert stats["tokens_by_stage"] == {
        stage: {"prompt": c["prompt"], "completion": c["completion"]} for stage, c in by_stage.items()
    }
    assert stats["requests"] == {stage: c["requests"] for stage, c in by_stage.items()}
    prompt, completion = (sum(c[k] for c in by_stage.values()) for k in ("prompt", "completion"))
    assert stats["tokens"] == {"prompt": prompt, "completion": completion}
    if prices is None:
        assert stats["cost_usd"] is None
    else:
        assert stats["cost_usd"] == pytest.approx(
            (prompt * prices[0] + completion * prices[1]) / 1e6, abs=1e-6
        )
    return prompt + completion


def test_token_budgets_stop_mid_instructions_and_mid_annotation_and_larger_ones_resume_exactly(tmp_path):
    out, n, prices = tmp_path / "run", 2000, ("--price-input", "0.5", "--price-output", "1.5")
    with FastEndpoint(latency=0.005, seed=7) as fast:
        first = run(fast.url, out, n, "--token-budget", "30000", "--concurrency", "8", *prices)
        assert first.returncode == 1, first.stderr[-2000:]
        line = stop_line(first.stdout)
        assert "the token budget is spent" in line and "of 30,000 tokens used" in line
        spent = check_ledger(out, (0.5, 1.5))
        # Checked before sending: only the requests in flight when it was reached go past it.
        assert 30000 <= spent < 30000 + 8 * 400
        accepted = count_lines(out / "machine_instructions.jsonl")
        # Tasks are annotated as they are accepted: the stop cut both stages short.
        assert 0 < accepted < n and count_lines(out / "classification.jsonl") <= accepted
        assert f"accepted {accepted}/{n} instructions" in first.stdout and ", $0.0" in first.stdout

        second = run(fast.url, out, n, "--token-budget", "400000", "--concurrency", "8", *prices)
        assert second.returncode == 1, second.stderr[-2000:]
        assert "of 400,000 tokens used" in stop_line(second.stdout)
        assert 400000 <= check_ledger(out, (0.5, 1.5)) < 400000 + 8 * 400
        assert accepted < count_lines(out / "machine_instructions.jsonl") <= n
        annotated = count_lines(out / "classification.jsonl")
        assert 0 < annotated < n  # stopped mid-annotation

        third = run(fast.url, out, n, "--token-budget", "5000000", "--concurrency", "8", *prices)
        assert third.returncode == 0, third.stdout + third.stderr[-2000:]
        assert "stopped" not in third.stdout
        records = check_run_dir(out)  # no id, instruction, dataset record or request twice
        assert len(records["machine_instructions"]) == n
        assert len(records["classification"]) == len(records["instances"]) == n
        assert fast.prompts == len(records["responses"])  # every request paid for is saved, once
        check_ledger(out, (0.5, 1.5))


def test_a_cost_budget_stops_the_run_and_a_larger_one_finishes_it(tmp_path):
    out, prices = tmp_path / "run", ("--price-input", "2", "--price-output", "10")
    with FastEndpoint(seed=2) as fast:
        first = run(fast.url, out, 60, "--cost-budget", "0.01", *prices)
        assert first.returncode == 1, first.stderr[-2000:]
        line = stop_line(first.stdout)
        assert re.search(r"the cost budget is spent — \$0\.01\d+ of \$0\.01 used", line), line
        assert "--cost-budget" in line
        second = run(fast.url, out, 60, "--cost-budget", "1", *prices)
        assert second.returncode == 0, second.stdout + second.stderr[-2000:]
        records = check_run_dir(out)
        assert len(records["instances"]) == 60 and fast.prompts == len(records["responses"])
        assert check_ledger(out, (2.0, 10.0))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--cost-budget", "5"], "error: --cost-budget: a cost budget needs prices — pass --price-input and "
         "--price-output (USD per million prompt and completion tokens), or use --token-budget"),
        (["--price-input", "3"], "error: --price-input: a price needs its pair — pass --price-output too "
         "(USD per million tokens; 0 when that side is free)"),
        (["--token-budget", "0"], "error: --token-budget: Input should be greater than 0 (got 0)"),
    ],
)  # fmt: skip
def test_budget_and_price_settings_that_cannot_work_are_one_line(tmp_path, flags, message):
    result = run("http://127.0.0.1:9/v1", tmp_path / "run", 10, *flags)
    assert result.returncode == 2
    assert result.stderr.strip() == message
    assert not (tmp_path / "run").exists()


def test_a_cost_budget_in_a_config_file_names_the_file(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text("cost_budget = 2.5\n")
    result = selfinstruct("run", "--config", str(config), "--dry-run")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {config}: cost_budget: a cost budget needs prices")


def table(stdout: str) -> dict[str, list[int]]:
    """The rows of the dry-run table: stage -> requests, prompt tokens, completion tokens[, cost]."""
    rows = {}
    for line in stdout.splitlines():
        cells = line.split()
        if cells and cells[0] in ("instructions", "classification", "instances", "judge", "total"):
            rows[cells[0]] = [float(c.replace(",", "")) for c in cells[1:]]
    return rows


def test_dry_run_prints_the_estimate_and_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(
        "http://127.0.0.1:9/v1", tmp_path / "new", 700, "--price-input", "1", "--price-output", "2",
        "--token-budget", "100000", "--dry-run",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []  # no run directory, no outputs/, no lock; nothing sent
    out = result.stdout
    assert out.startswith("dry run: estimate for 700 instructions — nothing sent or written\n")
    rows = table(out)
    # 7 instructions per request (items 9 to 15), half accepted: 700 / 3.5 requests, and 15 more in
    # flight when the target is reached (--concurrency 16).
    assert rows["instructions"][0] == 215 and rows["classification"][0] == rows["instances"][0] == 700
    assert rows["total"][:3] == [sum(rows[s][i] for s in ("instructions", "classification", "instances"))
                                 for i in range(3)]  # fmt: skip
    assert rows["classification"][2] == 700 and rows["instances"][2] == 700 * 150  # 1 and max_tokens / 2
    cost = (rows["total"][1] * 1 + rows["total"][2] * 2) / 1e6
    assert rows["total"][3] == pytest.approx(cost, abs=1e-4)
    assert "assumed: 7 instructions per request (the list stops at item 16), 50% of them accepted" in out
    assert "counted with ≈ characters / 4 (CJK characters 1 each)" in out
    assert "--token-budget 100,000: stops the run at about" in out
    assert "judge" not in rows  # the judge is off


def test_dry_run_with_the_judge_counts_one_judge_request_per_record(tmp_path):
    result = run(
        "http://127.0.0.1:9/v1", tmp_path / "new", 100, "--judge", "--judge-max-tokens", "20", "--dry-run"
    )
    assert result.returncode == 0, result.stderr
    rows = table(result.stdout)
    assert rows["judge"][0] == 200 and rows["judge"][2] == 200 * 20  # 2 records per task; min(30, max_tokens)
    assert rows["judge"][1] > 200 * 100  # the rubric and a record: over 100 tokens a prompt
    assert rows["total"][0] == sum(
        rows[s][0] for s in ("instructions", "classification", "instances", "judge")
    )
    assert "2 records to judge per task" in result.stdout


def test_dry_run_on_a_run_directory_estimates_the_rest_from_its_own_averages(tmp_path):
    out = tmp_path / "run"
    with FastEndpoint(seed=5) as fast:
        assert run(fast.url, out, 300).returncode == 0
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        dry = run(fast.url, out, 900, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        requests = len(before["responses.jsonl"].splitlines())
        asked = sum(
            json.loads(ln)["stage"] == "instructions" for ln in before["responses.jsonl"].splitlines()
        )
        assert f"measured from {requests:,} requests in {out}" in dry.stdout
        assert "assumed" not in dry.stdout
        estimate = table(dry.stdout)
        spent_before = check_ledger(out)

        real = run(fast.url, out, 900)
        assert real.returncode == 0
        _, by_stage = ledger(out)
        spent = check_ledger(out) - spent_before
        estimated = estimate["total"][1] + estimate["total"][2]
        # FastEndpoint's answers vary little: the estimate of the remaining tokens is within 5%.
        assert estimated == pytest.approx(spent, rel=0.05), (estimated, spent)
        assert estimate["classification"][0] == estimate["instances"][0] == 600
        # Within one round of requests in flight (--concurrency 16).
        sent = by_stage["instructions"]["requests"] - asked
        assert abs(estimate["instructions"][0] - sent) <= 16, (estimate["instructions"][0], sent)


def test_dry_run_on_a_run_with_other_settings_is_refused_like_the_run(tmp_path):
    out = tmp_path / "run"
    with FastEndpoint(seed=5) as fast:
        assert run(fast.url, out, 10).returncode == 0
        dry = run(fast.url, out, 10, "--rouge-threshold", "0.5", "--dry-run")
    assert dry.returncode == 2
    assert dry.stderr.startswith(f"error: {out}: holds a run with other settings (rouge_threshold)")


def test_the_whole_run_eta_adds_the_annotation_stage_from_tokens_per_second():
    stats = RunStats(target=100, completion_tokens=1000)
    stats.started = time.monotonic() - 10  # 100 completion tokens a second
    progress = Progress(stats, annotation_tokens={"classification": 1.0, "instances": 99.0})
    with progress.stage("instructions", 100) as bar:
        assert progress.run_eta() is None  # nothing accepted yet: no rate for the stage
        # Half the instructions accepted at 20 completion tokens each; none annotated (100 tokens
        # assumed per task): 50 × 20 + 100 × 100 tokens left at 100 tokens/s.
        bar.update(50)
        stats.accepted, stats.stage_completion_tokens["instructions"] = 50, 1000
        assert progress.run_eta() == pytest.approx((50 * 20 + 100 * 100) / 100, rel=0.01)
        bar.update(50)  # instructions done: 100 tasks × 100 tokens at 100 tokens/s are left
        stats.accepted = 100
        assert progress.run_eta() == pytest.approx(100, rel=0.01)
        stats.requests["instances"], stats.stage_completion_tokens["instances"] = 10, 490  # measured: 49
        stats.tasks_annotated = 50
        assert progress.run_eta() == pytest.approx(50 * 50 / 100, rel=0.01)


@pytest.mark.slow
def test_a_budget_stop_and_resume_against_the_real_server(vllm_server, tmp_path):
    out = tmp_path / "run"
    args = ("--concurrency", "2", "--max-tokens", "160")
    first = run(vllm_server.base_url, out, 4, "--token-budget", "700", *args)
    assert first.returncode == 1, first.stdout + first.stderr[-3000:]
    assert "of 700 tokens used" in stop_line(first.stdout)
    paid = check_ledger(out)
    assert paid >= 700
    records = check_run_dir(out)
    assert len(records["responses"]) <= 6  # a few requests, then no new one

    again = run(vllm_server.base_url, out, 4, "--token-budget", "700", *args)
    assert again.returncode == 1 and check_ledger(out) == paid  # spent: nothing sent

    dry = run(vllm_server.base_url, out, 4, "--token-budget", "1000000", "--dry-run", *args)
    assert dry.returncode == 0 and "measured from" in dry.stdout
    last = run(vllm_server.base_url, out, 4, "--token-budget", "1000000", *args)
    assert last.returncode == 0, last.stdout + last.stderr[-3000:]
    records = check_run_dir(out)
    assert len(records["machine_instructions"]) == 4 and len(records["instances"]) == 4
    assert check_ledger(out) > paid
    (tmp_path / "dry-run.txt").write_text(dry.stdout)  # for comparing the estimate by hand
