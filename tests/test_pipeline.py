"""Loop logic of the pipeline, with a fake model that answers from queues and records prompts."""

import asyncio
import json
import logging
import random
import re
import time
from pathlib import Path

import pytest

from selfinstruct.config import RunConfig
from selfinstruct.filters import HeuristicFilter
from selfinstruct.generation.client import Completion
from selfinstruct.pipeline import Pipeline, Slots, sample_demos
from selfinstruct.resources import resource_path
from selfinstruct.runner import summary_line
from selfinstruct.stats import RunStats
from selfinstruct.tasks import SeedTask, read_jsonl

SEEDS = [SeedTask(id=f"s{i}", instruction=f"Seed task number {w} about topic {w}.") for i, w in
         enumerate(["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"])]  # fmt: skip
HEURISTICS = HeuristicFilter.from_file(resource_path("filters/default.toml"))


class FakeLLM:
    api = "completions"

    def __init__(self, instruction_texts):
        self.instruction_texts = iter(instruction_texts)
        self.prompts: list[str] = []

    async def complete(self, prompt, sampling, stop=None, response_format=None):
        self.prompts.append(prompt)
        await asyncio.sleep(0)
        if prompt.startswith("Come up with"):
            text = next(self.instruction_texts, " Seed task number alpha about topic alpha.")
        elif prompt.endswith("Is it classification?"):
            text = " Yes" if "spam" in prompt.rsplit("Task:", 1)[1] else " No"
        elif prompt.endswith("Class label:"):
            text = " Spam\nInput: WIN A PRIZE NOW\nClass label: Not spam\nInput: Lunch at noon?\n"
        else:
            text = " <none>\nOutput: A complete answer.\n"
        return Completion(text, "stop", prompt_tokens=10, completion_tokens=5)


NOVEL = [
    "Explain why the sky looks blue on a clear afternoon.",
    "List four vegetables that grow well in cold climates.",
    "Convert the recipe quantities from cups to grams.",
    "Suggest a weekend itinerary for a first visit to Lisbon.",
    "Rewrite this email so that it sounds more polite.",
    "Compute the average of the numbers given below.",
    "Name three inventions that changed how people travel.",
    "Compose a limerick about a forgetful wizard.",
    "Outline the steps for changing a flat bicycle tyre.",
    "Give feedback on the opening line of this short story.",
    "Translate the greeting into Spanish and Italian.",
    "Recommend a board game for a family of five.",
]


def novel(n):
    return NOVEL[n]


def run(tmp_path: Path, llm, **overrides) -> Pipeline:
    config = RunConfig(**{"num_instructions": 5, "concurrency": 2, "seed": 7, **overrides})
    pipeline = Pipeline(config, llm, SEEDS, HEURISTICS, tmp_path, progress=False)
    asyncio.run(pipeline.run())
    return pipeline


def test_stops_at_exactly_the_target_and_writes_every_stage(tmp_path: Path):
    replies = [f" {novel(i)}\n10. {novel(i + 1)}\n11. {novel(i + 2)}" for i in (0, 3, 6)]
    pipeline = run(tmp_path, FakeLLM(replies))
    accepted = read_jsonl(tmp_path / "machine_instructions.jsonl")
    assert len(accepted) == 5
    assert len({r["instruction"] for r in accepted}) == 5
    assert all(0 <= r["similarity"] <= 0.7 for r in accepted)
    assert len(read_jsonl(tmp_path / "classification.jsonl")) == 5
    dataset = read_jsonl(tmp_path / "dataset.jsonl")
    assert len(dataset) == 5 and all(r["output"] == "A complete answer." for r in dataset)
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["instructions"]["accepted"] == 5 and stats["dataset_records"] == 5
    assert pipeline.stats.in_flight == 0


def test_rejects_are_recorded_with_their_reason(tmp_path: Path):
    replies = [
        " Seed task number alpha about topic alpha.\n10. Draw a picture of a cat please.\n11. Too short.",
        " " + novel(1),
        " " + novel(2) + "\n10. " + novel(3) + "\n11. " + novel(4) + "\n12. " + novel(5),
    ]
    run(tmp_path, FakeLLM(replies), concurrency=1)
    reasons = [r["reason"] for r in read_jsonl(tmp_path / "rejected.jsonl")]
    assert reasons == ["too_similar", "blacklisted_keyword", "too_short"]
    similar = read_jsonl(tmp_path / "rejected.jsonl")[0]
    assert (
        similar["most_similar"] == "Seed task number alpha about topic alpha."
        and similar["similarity"] == 1.0
    )


def test_accepted_instructions_join_the_pool_and_later_prompts(tmp_path: Path):
    llm = FakeLLM([" " + novel(i) for i in range(10)])
    run(tmp_path, llm, concurrency=1)
    first = read_jsonl(tmp_path / "machine_instructions.jsonl")[0]["instruction"]
    bootstrap_prompts = [p for p in llm.prompts if p.startswith("Come up with")]
    assert first not in bootstrap_prompts[0]
    assert any(first in p for p in bootstrap_prompts[2:])  # sampled as a machine demo later


def test_classification_tasks_get_output_first_instances(tmp_path: Path):
    replies = [" Decide whether the message is spam or a normal message from a friend."] + [
        " " + novel(i) for i in range(10)
    ]
    run(tmp_path, FakeLLM(replies), concurrency=1)
    spam = [r for r in read_jsonl(tmp_path / "dataset.jsonl") if r["is_classification"]]
    assert {(r["input"], r["output"]) for r in spam} == {
        ("WIN A PRIZE NOW", "Spam"),
        ("Lunch at noon?", "Not spam"),
    }


def test_request_budget_ends_a_run_that_finds_nothing_new(tmp_path: Path):
    llm = FakeLLM([])  # every reply repeats a seed
    pipeline = run(tmp_path, llm, max_requests=6)
    assert pipeline.stats.accepted == 0
    assert sum(1 for p in llm.prompts if p.startswith("Come up with")) == 6
    assert pipeline.stats.rejected["too_similar"] == 6


def test_demo_sampling():
    seeds = [f"seed {i}" for i in range(10)]
    assert len(sample_demos(random.Random(1), seeds, [], 8, 2)) == 8
    demos = sample_demos(random.Random(1), seeds, ["m1"], 8, 2)
    assert "m1" in demos and len(demos) == 8
    demos = sample_demos(random.Random(1), seeds, ["m1", "m2", "m3"], 8, 2)
    assert sum(d.startswith("m") for d in demos) == 2 and len(set(demos)) == 8
    assert sample_demos(random.Random(5), seeds, ["m1"], 8, 2) == sample_demos(
        random.Random(5), seeds, ["m1"], 8, 2
    )


class Crash(Exception):
    pass


class CrashingLLM(FakeLLM):
    """Answers like FakeLLM, then fails on call number `crash_at` (a kill in the middle of a run)."""

    def __init__(self, instruction_texts, crash_at):
        super().__init__(instruction_texts)
        self.crash_at = crash_at

    async def complete(self, prompt, sampling, stop=None, response_format=None):
        if len(self.prompts) + 1 == self.crash_at:
            raise Crash
        return await super().complete(prompt, sampling, stop)


def assert_consistent(run_dir: Path, target: int) -> None:
    accepted = read_jsonl(run_dir / "machine_instructions.jsonl")
    assert len(accepted) == target
    assert len({r["id"] for r in accepted}) == len({r["instruction"] for r in accepted}) == target
    for name in ("classification", "instances"):
        ids = [r["id"] for r in read_jsonl(run_dir / f"{name}.jsonl")]
        assert sorted(ids) == sorted(r["id"] for r in accepted), name
    dataset_ids = [r["id"] for r in read_jsonl(run_dir / "dataset.jsonl")]
    assert len(dataset_ids) == len(set(dataset_ids)) == target


@pytest.mark.parametrize("crash_at", [2, 4, 7, 9, 11])
def test_a_crashed_run_resumes_without_duplicates_or_paying_twice(tmp_path: Path, crash_at: int):
    replies = [f" {novel(i)}\n10. {novel(i + 1)}" for i in range(0, 12, 2)]
    with pytest.raises(Crash):
        run(tmp_path, CrashingLLM(replies, crash_at), concurrency=1)
    answered = len(read_jsonl(tmp_path / "responses.jsonl"))
    assert answered == crash_at - 1
    llm = FakeLLM(
        replies[sum(1 for r in read_jsonl(tmp_path / "responses.jsonl") if "Come up" in r["text"]) :]
    )
    resumed = run(tmp_path, llm, concurrency=1)
    assert_consistent(tmp_path, 5)
    # Every request answered before the crash came from the cache, none was sent again.
    assert resumed.stats.requests.total() == answered + len(llm.prompts)
    assert json.loads((tmp_path / "stats.json").read_text())["resumes"] == 1


def test_a_torn_last_line_is_dropped_and_the_record_rebuilt(tmp_path: Path):
    replies = [f" {novel(i)}\n10. {novel(i + 1)}" for i in range(0, 12, 2)]
    run(tmp_path, FakeLLM(replies), concurrency=1)
    path = tmp_path / "dataset.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][:20])  # a kill in the middle of the last write
    llm = FakeLLM([])
    run(tmp_path, llm, concurrency=1)
    assert path.read_text() == "".join(lines)
    assert llm.prompts == []  # rebuilt from the instance record, nothing asked again
    assert_consistent(tmp_path, 5)


def test_a_larger_target_extends_a_finished_run(tmp_path: Path):
    replies = [f" {novel(i)}\n10. {novel(i + 1)}" for i in range(0, 12, 2)]
    run(tmp_path, FakeLLM(replies[:3]), concurrency=1)
    llm = FakeLLM(replies[3:])
    run(tmp_path, llm, concurrency=1, num_instructions=8)
    assert_consistent(tmp_path, 8)
    annotated = [p.rsplit("Task:", 1)[1] for p in llm.prompts if "Task:" in p]
    assert len(annotated) == 2 * 3 and not any(novel(0) in p for p in annotated)  # old tasks not redone


def test_a_lower_target_on_resume_says_the_target_was_reached(tmp_path: Path):
    replies = [f" {novel(i)}\n10. {novel(i + 1)}" for i in range(0, 12, 2)]
    run(tmp_path, FakeLLM(replies), concurrency=1, num_instructions=8)
    llm = FakeLLM([])
    stats = run(tmp_path, llm, concurrency=1, num_instructions=5).stats
    assert llm.prompts == []
    line = summary_line(stats, tmp_path / "dataset.jsonl")
    assert re.fullmatch(
        rf"target 5 reached: 8 instructions accepted \(earlier runs went past it; 8/8 candidates kept\), "
        rf"8 records in {re.escape(str(tmp_path / 'dataset.jsonl'))}; \d+ s, [\d.]+ tokens/s",
        line,
    ), line
    assert len(read_jsonl(tmp_path / "dataset.jsonl")) == 8


def test_the_summary_line_of_a_run_that_reached_its_target():
    stats = RunStats(target=5, accepted=5, candidates=9, instances_kept=12, completion_tokens=300)
    stats.prior_seconds, stats.started = 60.0, time.monotonic()
    assert summary_line(stats, Path("run/dataset.jsonl")) == (
        "accepted 5/5 instructions (5/9 candidates kept), 12 records in run/dataset.jsonl; 60 s, 5.0 tokens/s"
    )


@pytest.mark.parametrize(
    "content",
    ["{torn", "[1, 2]", '{"retries": {"http_503": "many"}}', '{"wall_seconds": -5}', '{"resumes": "x"}'],
)
def test_a_hand_edited_stats_json_resumes_with_zeroed_carried_counts(tmp_path: Path, caplog, content):
    replies = [f" {novel(i)}\n10. {novel(i + 1)}" for i in range(0, 12, 2)]
    run(tmp_path, FakeLLM(replies[:3]), concurrency=1)
    (tmp_path / "stats.json").write_text(content)
    with caplog.at_level(logging.WARNING):
        run(tmp_path, FakeLLM(replies[3:]), concurrency=1, num_instructions=8)
    assert_consistent(tmp_path, 8)
    saved = json.loads((tmp_path / "stats.json").read_text())
    assert (saved["resumes"], saved["retries"]) == (1, {})
    assert saved["wall_seconds"] < 60  # this run's time only
    assert [r.getMessage() for r in caplog.records if "stats.json" in r.getMessage()] == [
        f"{tmp_path / 'stats.json'}: {WHY[content]} — retries, endpoint counts, wall time and the resume "
        "count start again from zero"
    ]


WHY = {
    "{torn": "not valid JSON",
    "[1, 2]": "Input should be a valid dictionary or instance of _Carried",
    '{"retries": {"http_503": "many"}}': "retries.http_503: Input should be a valid integer, unable to parse "
    "string as an integer",
    '{"wall_seconds": -5}': "wall_seconds: Input should be greater than or equal to 0",
    '{"resumes": "x"}': "resumes: Input should be a valid integer, unable to parse string as an integer",
}


def test_a_stats_json_from_an_earlier_run_carries_its_counts(tmp_path: Path):
    replies = [f" {novel(i)}\n10. {novel(i + 1)}" for i in range(0, 12, 2)]
    run(tmp_path, FakeLLM(replies[:3]), concurrency=1)
    saved = json.loads((tmp_path / "stats.json").read_text())
    saved |= {"retries": {"http_503": 2}, "wall_seconds": 1000.0, "resumes": 3}
    (tmp_path / "stats.json").write_text(json.dumps(saved))
    run(tmp_path, FakeLLM(replies[3:]), concurrency=1, num_instructions=8)
    saved = json.loads((tmp_path / "stats.json").read_text())
    assert (saved["resumes"], saved["retries"]) == (4, {"http_503": 2}) and saved["wall_seconds"] >= 1000


def test_tasks_are_annotated_beside_the_first_stage(tmp_path: Path):
    llm = FakeLLM([" " + novel(i) for i in range(10)])
    run(tmp_path, llm, num_instructions=5, concurrency=1)
    kinds = ["I" if p.startswith("Come up with") else "A" for p in llm.prompts]
    # The first task's annotation is asked for before the last instruction request.
    assert kinds.index("A") < len(kinds) - 1 - kinds[::-1].index("I"), "".join(kinds)
    assert len(read_jsonl(tmp_path / "instances.jsonl")) == 5


def test_an_annotation_that_fails_stops_the_first_stage_too(tmp_path: Path):
    class Failing(FakeLLM):
        async def complete(self, prompt, sampling, stop=None, response_format=None):
            if prompt.endswith("Is it classification?"):
                raise RuntimeError("classification broke")
            return await super().complete(prompt, sampling, stop, response_format)

    llm = Failing([" " + novel(i) for i in range(len(NOVEL))] * 100)
    with pytest.raises(RuntimeError, match="classification broke"):
        run(tmp_path, llm, num_instructions=1000, concurrency=2, rouge_threshold=1.0, check_in_worker=False)
    assert sum(p.startswith("Come up with") for p in llm.prompts) < 20


def test_slots_go_to_the_first_named_stage_waiting_then_in_order():
    async def main():
        slots = Slots(1, ["instances", "classification", "instructions"])
        order = []

        async def take(name, tag):
            async with slots[name]:
                order.append(tag)
                await asyncio.sleep(0)

        await slots.acquire(0)  # every later request waits
        waiting = [asyncio.ensure_future(take(name, tag)) for name, tag in
                   [("instructions", "i1"), ("classification", "c1"), ("instances", "n1"),
                    ("instructions", "i2"), ("classification", "c2")]]  # fmt: skip
        cancelled = asyncio.ensure_future(take("instances", "gone"))
        await asyncio.sleep(0)
        cancelled.cancel()
        slots.release()
        await asyncio.gather(*waiting)
        assert order == ["n1", "c1", "c2", "i1", "i2"]
        await slots.acquire(2)  # every slot given back: one free again
        assert slots._free == 0 and not any(not f.done() for _, _, f in slots._waiting)

    asyncio.run(main())
