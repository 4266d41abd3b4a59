"""`selfinstruct seeds check` over the shipped seed sets and the original Self-Instruct seeds."""

import json
import subprocess
from pathlib import Path

import pytest
from clirun import selfinstruct
from rouge_score import rouge_scorer

from selfinstruct.resources import resource_path
from selfinstruct.seedcheck import check_seeds
from selfinstruct.tasks import load_seeds

ORIGINAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "self_instruct_seed_tasks.jsonl"
needs_original = pytest.mark.skipif(not ORIGINAL.exists(), reason="../shared/data is absent")


def seeds_check(*args: str) -> subprocess.CompletedProcess:
    return selfinstruct("seeds", "check", *args)


def test_english_seed_set():
    s = check_seeds(resource_path("seeds/en.jsonl"))
    assert (s.language, s.tokenizer) == ("en", "rouge")
    assert s.tasks == 175
    assert s.classification >= 25
    assert 45 <= s.empty_input <= 55
    assert set(s.instances_per_task) <= {1, 2, 3}
    assert s.problems == [] and s.near_duplicates == [] and s.heuristic_rejects == {}


def test_chinese_seed_set_has_the_same_proportions():
    en = check_seeds(resource_path("seeds/en.jsonl"))
    zh = check_seeds(resource_path("seeds/zh.jsonl"))
    assert (zh.language, zh.tokenizer) == ("zh", "unicode")
    assert zh.tasks >= 100
    assert abs(zh.classification_share - en.classification_share) < 0.05
    assert abs(zh.empty_input_share - en.empty_input_share) < 0.05
    assert set(zh.instances_per_task) <= {1, 2, 3}
    assert zh.problems == [] and zh.near_duplicates == [] and zh.heuristic_rejects == {}


@needs_original
def test_original_seed_set():
    s = check_seeds(ORIGINAL)
    assert (s.tasks, s.classification, s.empty_input) == (175, 26, 50)
    assert len(s.near_duplicates) == 2  # e.g. 'Write a conversation/cover letter based on the given facts.'


@needs_original
def test_english_seeds_are_our_own_words():
    """Every shipped instruction stays below ROUGE-L 0.5 against every original seed instruction."""
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    originals = [t.instruction for t in load_seeds(ORIGINAL)]
    for task in load_seeds(resource_path("seeds/en.jsonl")):
        worst = max(scorer.score(o, task.instruction)["rougeL"].fmeasure for o in originals)
        assert worst < 0.5, task.instruction


def test_cli_prints_the_table_and_json(tmp_path: Path):
    result = seeds_check(str(resource_path("seeds/en.jsonl")))
    assert result.returncode == 0, result.stderr
    assert "classification" in result.stdout and "near-duplicate pairs" in result.stdout
    result = seeds_check("--json", str(resource_path("seeds/zh.jsonl")))
    assert json.loads(result.stdout)["language"] == "zh"


def test_cli_schema_error_names_the_line(tmp_path: Path):
    path = tmp_path / "seeds.jsonl"
    good = {"id": "a", "instruction": "Add the numbers.", "instances": [{"input": "1 2", "output": "3"}]}
    path.write_text(json.dumps(good) + "\n" + '{"id": "b", "instruction": ""}\n')
    result = seeds_check(str(path))
    assert result.returncode == 2
    assert "seeds.jsonl:2" in result.stderr and "instruction" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_reports_tasks_without_usable_instances(tmp_path: Path):
    path = tmp_path / "seeds.jsonl"
    rows = [
        {"id": "a", "instruction": "Add the two numbers.", "instances": []},
        {"id": "a", "instruction": "Name a warm color.", "instances": [{"input": "", "output": " "}]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = seeds_check(str(path))
    assert result.returncode == 2
    assert "seeds.jsonl:1: task 'a' has no instances" in result.stdout
    assert "seeds.jsonl:2: instances[0].output is empty" in result.stdout
    assert "seeds.jsonl:2: id 'a' already used at" in result.stdout
