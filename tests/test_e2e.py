"""End-to-end: the real CLI, through the real openai client, against a real vLLM CPU server."""

import itertools
import json
from pathlib import Path

import pytest
from clirun import EMBEDDED_TARGET as TARGET
from clirun import SECRET, selfinstruct
from rouge_score import rouge_scorer

from selfinstruct.filters import HeuristicFilter
from selfinstruct.resources import resource_path
from selfinstruct.tasks import load_seeds, read_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(embedded_run) -> Path:
    return embedded_run


def test_run_accepts_exactly_the_target_and_each_passes_the_filters(run_dir: Path):
    accepted = [r["instruction"] for r in read_jsonl(run_dir / "machine_instructions.jsonl")]
    assert len(accepted) == TARGET
    heuristics = HeuristicFilter.from_file(resource_path("filters/default.toml"))
    assert all(heuristics.check(text).kept for text in accepted)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    seeds = [t.instruction for t in load_seeds(resource_path("seeds/en.jsonl"))]
    for text in accepted:
        assert max(scorer.score(s, text)["rougeL"].fmeasure for s in seeds) <= 0.7
    for a, b in itertools.combinations(accepted, 2):
        assert scorer.score(a, b)["rougeL"].fmeasure <= 0.7


def test_run_writes_every_stage(run_dir: Path):
    ids = {r["id"] for r in read_jsonl(run_dir / "machine_instructions.jsonl")}
    classification = read_jsonl(run_dir / "classification.jsonl")
    assert {r["id"] for r in classification} == ids
    assert all(isinstance(r["is_classification"], bool) for r in classification)
    instances = read_jsonl(run_dir / "instances.jsonl")
    assert {r["id"] for r in instances} == ids
    assert sum(len(r["instances"]) for r in instances) > 0
    for rejected in read_jsonl(run_dir / "rejected.jsonl"):
        assert rejected["reason"].replace("_", "").isalpha()
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["instructions"]["accepted"] == TARGET
    assert stats["tokens"]["completion"] > 0


def test_dataset_loads_with_datasets(run_dir: Path):
    import datasets

    ds = datasets.load_dataset("json", data_files=str(run_dir / "dataset.jsonl"), split="train")
    assert len(ds) > 0
    assert {"instruction", "input", "output"} <= set(ds.column_names)
    assert all(row["output"].strip() for row in ds)
    assert len(ds) == json.loads((run_dir / "stats.json").read_text())["dataset_records"]


def test_api_key_is_never_written(run_dir: Path):
    """Not in config.json, stats, outputs, the response cache, nor in what the CLI printed."""
    for path in [*run_dir.iterdir(), run_dir.parent / "cli-output.log"]:
        assert SECRET not in path.read_text(errors="replace"), path.name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["backend"]["model"] == "SmolLM2-135M-Instruct"


def test_chat_endpoint(vllm_server):
    import asyncio

    from selfinstruct.config import Sampling
    from selfinstruct.generation.client import LLMClient

    async def ask():
        client = LLMClient([vllm_server.base_url], vllm_server.served_name, api="chat")
        try:
            return await client.complete("Name one color.", Sampling(temperature=0, max_tokens=8))
        finally:
            await client.close()

    completion = asyncio.run(ask())
    assert completion.text.strip() and completion.completion_tokens > 0


def test_unknown_model_is_a_one_line_error(vllm_server, tmp_path: Path):
    result = selfinstruct(
        "run", "--backend", "openai", "--base-url", vllm_server.base_url, "--model", "no-such-model",
        "-n", "2", "-o", str(tmp_path / "run"), "--no-progress", timeout=1200,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: model 'no-such-model' is not served")
    assert "Traceback" not in result.stderr


def test_a_judged_run_killed_mid_judging_resumes_and_every_kept_record_meets_the_threshold(
    vllm_server, tmp_path: Path
):
    """Structured output on the real server: every judge answer parses. The run is killed once the
    first judgements are written and resumed: no record judged twice, none lost. The 135M model
    often copies the input as the output, which the instance rules drop: 30 tasks leave records to
    judge (a 6-task run once left none)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out, min_score = tmp_path / "run", 2
    cmd = [
        sys.executable, "-m", "selfinstruct", "run", "--backend", "openai",
        "--base-url", vllm_server.base_url, "-n", "30", "-o", str(out), "--seed", "4",
        "--concurrency", "8", "--no-progress",
        "--judge", "--min-score", str(min_score),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 900
    judgements = out / "judgements.jsonl"
    while proc.poll() is None and not (judgements.exists() and judgements.read_text().count("\n") >= 1):
        assert time.monotonic() < deadline, "no judgement written"
        time.sleep(0.2)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_jsonl(judgements)
    result = selfinstruct(*cmd[3:], timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    judged = read_jsonl(judgements)
    assert judged[: len(before)] == before and len({j["id"] for j in judged}) == len(judged)
    paid = [r["index"] for r in read_jsonl(out / "responses.jsonl") if r["stage"] == "judge"]
    assert sorted(paid) == sorted(j["id"] for j in judged)  # one request per record, none lost
    dataset = read_jsonl(out / "dataset.jsonl")
    assert all(isinstance(r["score"], int) and r["score"] >= min_score for r in dataset)
    judge = stats["judge"]
    print(f"\njudged embedded run (killed: {killed}): {judge}")
    assert judge["unparsed"] == 0 and judge["scored"] == len(judged) > 0
    assert judge["scored"] == len(dataset) + judge["low_score"]
