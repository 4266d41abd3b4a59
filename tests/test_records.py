"""The run-file records: each model reads back exactly what the pipeline wrote, and the read-only
reader leaves a run directory as it found it."""

import asyncio
import json
import logging
from pathlib import Path

import pytest
from pydantic import BaseModel

from selfinstruct.config import RunConfig
from selfinstruct.errors import UserError
from selfinstruct.filters import HeuristicFilter
from selfinstruct.generation.client import Completion
from selfinstruct.pipeline import Pipeline
from selfinstruct.records import (
    RUN_FILES,
    CachedResponse,
    DatasetRecord,
    InstanceCounts,
    InstructionCounts,
    Rejected,
    Stats,
    TokenCounts,
    read_run_file,
    read_stats,
)
from selfinstruct.resources import resource_path
from selfinstruct.tasks import SeedTask, jsonl_line

SEEDS = [SeedTask(id=f"s{i}", instruction=f"Seed task number {w} about topic {w}.") for i, w in
         enumerate(["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"])]  # fmt: skip
SPAM = "List the classes of spam email that a mail filter should catch."
INSTRUCTION_REPLIES = [
    # Kept, bad_prefix, too_similar (with most_similar), kept, and a last item cut off: truncated.
    Completion(
        " Explain why the sky looks blue on a clear afternoon.\n10. Write a program that prints hello."
        f"\n11. Seed task number alpha about topic alpha.\n12. {SPAM}\n13. Describe the trunc",
        "length",
    ),
    Completion(
        " Convert the recipe quantities from cups to grams.\n10. Draw a picture of a cat."
        "\n11. Suggest a weekend itinerary for a first visit to Lisbon.\n",
        "stop",
    ),
]
CLASS_LABELS = (
    " Spam\nInput: WIN A PRIZE NOW\nClass label: Not spam\nInput: Lunch at noon?\nClass label: Spam"
    "\nInput: WIN A PRIZE NOW\nClass label: Ham\nInput: Lunch"
)
INPUT_FIRST = (
    " <none>\nOutput: A complete answer.\nExample 2\nInput: same\nOutput: same"
    "\nExample 3\nInput: x\nOutput: \n"
)


class ScriptedLLM:
    """Answers that make a run write every kind of record: each reject reason, a classification
    answer of each kind, instances with drops and a truncated instance response."""

    api = "completions"

    def __init__(self):
        self.instruction_replies = iter(INSTRUCTION_REPLIES)
        self.checks = 0
        self.judged = 0

    async def complete(self, prompt, sampling, stop=None, response_format=None):
        await asyncio.sleep(0)
        if prompt.startswith("Come up with"):
            return next(self.instruction_replies)
        if prompt.endswith("Is it classification?"):
            self.checks += 1
            task = prompt.rsplit("Task:", 1)[1]
            text = " Yes" if "spam" in task else " maybe" if "recipe" in task else " No"
            return Completion(text, "stop", 10, 1)
        if prompt.endswith("Class label:"):
            return Completion(CLASS_LABELS, "length", 20, 30)
        if prompt.endswith('{"score":'):  # the judge: a good score, a low one, an unreadable answer
            self.judged += 1
            text = [' 5, "reason": "Correct."}', ' 1, "reason": "Off topic."}', " great"][self.judged % 3]
            return Completion(text, "stop", 40, 9)
        return Completion(INPUT_FIRST, "stop", 20, 25)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    config = RunConfig(num_instructions=4, concurrency=1, seed=7)
    config.judge.enabled, config.judge.min_score, config.judge.unparsed = True, 3, "keep"
    heuristics = HeuristicFilter.from_file(resource_path("filters/default.toml"))
    asyncio.run(Pipeline(config, ScriptedLLM(), SEEDS, heuristics, run_dir, progress=False).run())
    return run_dir


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_the_run_writes_every_kind_of_record(run_dir: Path):
    assert set(RUN_FILES) == {p.name for p in run_dir.iterdir()} - {"config.json", ".selfinstruct.lock"}
    rejected = [json.loads(line) for line in lines(run_dir / "rejected.jsonl")]
    reasons = ["bad_prefix", "too_similar", "truncated", "blacklisted_keyword"]
    assert [r["reason"] for r in rejected] == reasons
    with_similar = [r["reason"] for r in rejected if "most_similar" in r and "similarity" in r]
    assert with_similar == ["too_similar"] and sum("similarity" in r for r in rejected) == 1
    raws = [json.loads(line)["raw"] for line in lines(run_dir / "classification.jsonl")]
    assert sorted(raws) == [" No", " No", " Yes", " maybe"]
    instances = [json.loads(line) for line in lines(run_dir / "instances.jsonl")]
    assert {r["truncated"] for r in instances} == {True, False} and all(r["dropped"] for r in instances)


@pytest.mark.parametrize("name", [n for n in RUN_FILES if n.endswith(".jsonl")])
def test_every_record_reads_back_and_dumps_to_the_same_line(run_dir: Path, name: str):
    """Same keys, same order, same values: the models are what the pipeline writes."""
    written = lines(run_dir / name)
    assert written
    for line in written:
        record = RUN_FILES[name].model_validate(json.loads(line))
        assert jsonl_line(record.model_dump()).decode() == line + "\n"
    assert [r.model_dump() for r in read_run_file(run_dir, name)] == [json.loads(line) for line in written]


def test_read_stats_reads_back_the_written_stats_json(run_dir: Path):
    text = (run_dir / "stats.json").read_text(encoding="utf-8")
    stats = read_stats(run_dir)
    assert json.dumps(stats.model_dump(), ensure_ascii=False, indent=2) + "\n" == text
    assert stats.instructions.accepted == 4 and stats.instructions.rejected["too_similar"] == 1
    assert stats.classification == {"no": 2, "yes": 1, "unparsed": 1}
    assert stats.dataset_records == len(read_run_file(run_dir, "dataset.jsonl"))
    assert stats.tokens.prompt > 0 and stats.requests["instructions"] == 2


def test_every_model_and_field_says_what_it_is():
    models = [*RUN_FILES.values(), InstructionCounts, InstanceCounts, TokenCounts]
    for model in models:
        assert model.__doc__ and model.__doc__ != BaseModel.__doc__, model
        assert all(field.description for field in model.model_fields.values()), model


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    copy.mkdir()
    for path in run_dir.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    return copy


def test_a_torn_last_line_is_left_out_and_the_file_left_alone(run_dir: Path, tmp_path: Path):
    run = copy_run(run_dir, tmp_path)
    path = run / "machine_instructions.jsonl"
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"id": "machine_task_4", "instruction": "Half of a rec')  # a write still under way
    before = path.read_bytes()
    records = read_run_file(run, "machine_instructions.jsonl")
    assert [r.id for r in records] == [f"machine_task_{n}" for n in range(4)]
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"similarity": "high"}, "field 'similarity': Input should be a valid number"),
        ({"request": "3"}, "field 'request': Input should be a valid integer"),
        ({"note": "mine"}, "field 'note': Extra inputs are not permitted"),
        (None, "not a JSON record"),
    ],
)
def test_a_bad_record_is_a_user_error_naming_file_line_and_field(run_dir, tmp_path, edit, message):
    run = copy_run(run_dir, tmp_path)
    path = run / "machine_instructions.jsonl"
    written = lines(path)
    written[1] = "not JSON" if edit is None else json.dumps(json.loads(written[1]) | edit)
    path.write_text("\n".join(written) + "\n", encoding="utf-8")
    with pytest.raises(UserError) as exc:
        read_run_file(run, "machine_instructions.jsonl")
    assert str(exc.value) == f"{path}:2: {message}"
    assert lines(path) == written


def test_rejected_similarity_comes_with_most_similar():
    with pytest.raises(ValueError, match="given together"):
        Rejected(instruction="x", reason="too_similar", request=0, similarity=0.9)
    record = {"instruction": "x", "reason": "too_short", "request": 0}
    assert Rejected.model_validate(record).model_dump() == record


def test_dataset_records_keep_keys_users_added(run_dir: Path, tmp_path: Path):
    run = copy_run(run_dir, tmp_path)
    path = run / "dataset.jsonl"
    written = lines(path)
    written[0] = json.dumps(json.loads(written[0]) | {"source": "reviewed", "score": 4})
    path.write_text("\n".join(written) + "\n", encoding="utf-8")
    first = read_run_file(run, "dataset.jsonl")[0]
    assert isinstance(first, DatasetRecord) and first.model_dump() == json.loads(written[0])


def test_invalid_responses_are_skipped_with_a_warning_as_on_resume(run_dir, tmp_path, caplog):
    run = copy_run(run_dir, tmp_path)
    path = run / "responses.jsonl"
    written = lines(path)
    # The first two instruction answers (annotation answers may come between them: their index is
    # a task id, which "first" could be).
    first, second = [k for k, line in enumerate(written) if json.loads(line)["stage"] == "instructions"][:2]
    renumbered = json.dumps(json.loads(written[second]) | {"index": "first"})
    edited = [written[first], "not JSON", renumbered]
    edited += [line for k, line in enumerate(written) if k not in (first, second)]
    path.write_text("\n".join(edited) + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        records = read_run_file(run, "responses.jsonl")
    assert len(records) == len(written) - 1 and all(isinstance(r, CachedResponse) for r in records)
    assert [r.getMessage().removeprefix(f"{path}:") for r in caplog.records] == [
        "2: skipping a line that is not a valid response (not a JSON record)",
        "3: skipping a line that is not a valid response (field 'index': an instructions request is "
        "numbered (got 'first'))",
    ]


def test_missing_files_and_names_that_are_not_run_files(tmp_path: Path):
    assert read_run_file(tmp_path, "dataset.jsonl") == []
    assert read_stats(tmp_path) is None
    with pytest.raises(ValueError, match="not a JSONL run file"):
        read_run_file(tmp_path, "stats.json")
    with pytest.raises(ValueError, match="not a JSONL run file"):
        read_run_file(tmp_path, "config.json")


def test_a_stats_json_that_is_not_stats_is_a_user_error(run_dir: Path, tmp_path: Path):
    run = copy_run(run_dir, tmp_path)
    stats = json.loads((run / "stats.json").read_text())
    stats["instructions"]["accepted"] = -1
    (run / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(UserError, match=r"stats.json: field 'instructions.accepted': Input should be"):
        read_stats(run)
    (run / "stats.json").write_text("{")
    with pytest.raises(UserError, match=r"stats.json:1: invalid JSON"):
        read_stats(run)
    assert isinstance(Stats.model_validate(stats | {"instructions": stats["instructions"] | {"accepted": 1}}),
                      Stats)  # fmt: skip
