"""The judge stage of a run and a model per stage, through the CLI against instant endpoints
(tests/fast_endpoint.py answers judge prompts with a random score); the same on the real embedded
server is in test_e2e.py."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

from aiohttp import web
from fast_endpoint import FastEndpoint
from test_dispatch import check_no_duplicates, command, wait_for
from test_faults import complete_lines

from selfinstruct.config import Sampling
from selfinstruct.generation.client import LLMClient
from selfinstruct.stages import JUDGE


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in complete_lines(path)]


def check_judged(out: Path, min_score: int) -> dict:
    """Every record judged once; the kept ones score at least min_score; the counts add up."""
    stats = json.loads((out / "stats.json").read_text())
    judge = stats["judge"]
    judgements = lines(out / "judgements.jsonl")
    ids = [j["id"] for j in judgements]
    assert len(ids) == len(set(ids)), "a record judged twice"
    keys = [r["index"] for r in lines(out / "responses.jsonl") if r["stage"] == "judge"]
    assert sorted(keys) == sorted(ids), "a judge request paid twice, or one without its judgement"
    dataset = lines(out / "dataset.jsonl")
    assert dataset and all(isinstance(r["score"], int) and r["score"] >= min_score for r in dataset)
    assert all(r["score_reason"] for r in dataset)
    by_id = {j["id"]: j for j in judgements}
    assert all(by_id[r["id"]]["score"] == r["score"] for r in dataset)
    assert judge["unparsed"] == 0 and judge["scored"] == len(judgements)
    assert judge["scored"] == len(dataset) + judge["low_score"]
    assert judge["low_score"] == sum(j["score"] < min_score for j in judgements) > 0
    assert sum(judge["histogram"].values()) == judge["scored"]
    assert stats["instances"]["dropped"]["low_score"] == judge["low_score"]
    assert stats["dataset_records"] == len(dataset)
    return stats


def test_the_judge_runs_on_its_own_endpoint_and_model_and_only_judge_requests_go_there(tmp_path: Path):
    out = tmp_path / "run"
    with FastEndpoint(seed=1) as main, FastEndpoint(seed=2, model="judge-model") as judge:
        extra = ["--judge", "--min-score", "3", "--judge-base-url", judge.url, "--concurrency", "8"]
        result = subprocess.run(
            command([main.url], out, 30, *extra), capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert "judge" not in main.kinds and set(main.kinds) == {
            "instructions",
            "classification",
            "instances",
        }
        assert set(judge.kinds) == {"judge"} and judge.formats > 0  # response_format was asked for
    stats = check_judged(out, 3)
    assert judge.kinds["judge"] == stats["judge"]["scored"]
    by_stage = stats["requests_by_stage_endpoint"]
    assert list(by_stage["judge"]) == [judge.url]
    assert by_stage["judge"][judge.url]["requests"] == stats["requests"]["judge"] == judge.kinds["judge"]
    assert {url for stage in ("instructions", "classification", "instances") for url in by_stage[stage]} == {
        main.url
    }
    saved = json.loads((out / "config.json").read_text())
    assert saved["judge"]["backend"] == {
        "kind": None, "model": "judge-model", "base_urls": [judge.url], "api": None,
    }  # fmt: skip
    assert saved["backend"]["model"] == "fast-model"
    check_no_duplicates(out)


def test_a_judged_run_killed_mid_judging_resumes_without_judging_a_record_twice(tmp_path: Path):
    out = tmp_path / "run"
    with FastEndpoint(latency=0.01, seed=3) as endpoint:
        cmd = command([endpoint.url], out, 40, "--judge", "--min-score", "2", "--concurrency", "6")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: len(complete_lines(out / "judgements.jsonl")) >= 10, 60, proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        judged = lines(out / "judgements.jsonl")
        before = endpoint.kinds["judge"]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        again = endpoint.kinds["judge"] - before
    assert judged == lines(out / "judgements.jsonl")[: len(judged)]  # kept as they were
    stats = check_judged(out, 2)
    # The resumed run asked the judge only about records it had not rated before the kill.
    assert 0 < again <= stats["judge"]["scored"] - len(judged)
    check_no_duplicates(out)


class RefusesFormats(FastEndpoint):
    """An endpoint that answers 400 to a request with a response_format, as some do."""

    async def _completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "response_format" in body:
            self.formats += 1
            return web.json_response({"error": {"message": "unknown field response_format"}}, status=400)
        return await super()._completions(request)


def test_an_endpoint_refusing_response_format_is_asked_without_it_from_then_on(caplog):
    async def ask(url: str) -> tuple[list, LLMClient]:
        client = LLMClient([url], "fast-model", max_batch=1)
        try:
            prompt = JUDGE.prompt("Add 2 and 2.", "", "4", lang="en")
            answers = [
                await client.complete(prompt, Sampling(max_tokens=40), JUDGE.stop, JUDGE.response_format)
                for _ in range(3)
            ]
            return [JUDGE.read(prompt, a.text, a.truncated, "completions") for a in answers], client
        finally:
            await client.close()

    with RefusesFormats(seed=4) as endpoint:
        judgements, client = asyncio.run(ask(endpoint.url))
        assert endpoint.formats == 1 and endpoint.kinds["judge"] == 3  # refused once, then never sent
    assert client.structured is False and all(1 <= j.score <= 5 for j in judgements)
    assert sum("refused response_format" in r.getMessage() for r in caplog.records) == 1


def test_the_dataset_cards_command_for_a_judged_run_with_its_own_judge_model_makes_the_same_settings(
    tmp_path: Path,
):
    import shlex

    from selfinstruct.cli import build_parser
    from selfinstruct.config import RunConfig, load_config
    from selfinstruct.dataset_card import run_command
    from selfinstruct.flags import given_settings

    config = RunConfig(num_instructions=5)
    config.judge.enabled, config.judge.min_score, config.judge.max_tokens = True, 4, 100
    config.judge.backend.base_urls, config.judge.backend.model = ["http://10.0.0.5:8001/v1"], "big"
    command, toml = run_command(config.model_dump(mode="json"))
    assert "10.0.0.5" not in command + toml and "--judge-base-url URL" in command
    (tmp_path / "run.toml").write_text(toml)
    argv = [config.judge.backend.base_urls[0] if a == "URL" else a for a in shlex.split(command)[3:]]
    argv = [str(tmp_path / "run.toml") if a == "run.toml" else a for a in argv]
    args = build_parser().parse_args(argv)
    again = load_config(args.config, *given_settings(args))
    assert again.judge == config.judge
