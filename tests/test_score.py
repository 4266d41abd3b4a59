"""`selfinstruct score` end to end: a file in, scored JSONL out, resumed without paying twice."""

import json
import re
from pathlib import Path

import pytest
from clirun import selfinstruct
from fast_endpoint import FastEndpoint

from selfinstruct.config import ScoreConfig, load_config
from selfinstruct.errors import UserError

SUMMARY = re.compile(
    r"scored (\d+) records, wrote (\d+) to .* \(low_score (\d+), unparsed (\d+)\); "
    r"scores 1:(\d+) 2:(\d+) 3:(\d+) 4:(\d+) 5:(\d+); ([\d,]+) tokens \((\d+) per record\), "
    r"(\d+) requests sent, (\d+) answers replayed; \d+ s"
)


def alpaca_file(path: Path, n: int = 30) -> Path:
    records = [
        {"instruction": f"Name {k + 2} colours of the rainbow.", "input": "" if k % 3 else f"Set {k}",
         "output": ", ".join(["red", "orange", "yellow", "green", "blue"][: 1 + k % 5])}
        for k in range(n)
    ]  # fmt: skip
    path.write_text(json.dumps(records))
    return path


def score(endpoint: FastEndpoint, *args: str):
    return selfinstruct("score", *args, "--backend", "openai", "--base-url", endpoint.url, "--no-progress")


def summary(stdout: str) -> dict:
    match = SUMMARY.search(stdout)
    assert match, stdout
    names = ["records", "written", "low_score", "unparsed", "s1", "s2", "s3", "s4", "s5", "tokens",
             "per_record", "sent", "replayed"]  # fmt: skip
    return {k: int(v.replace(",", "")) for k, v in zip(names, match.groups(), strict=True)}


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_record_gets_a_score_and_a_reason_in_input_order(tmp_path: Path):
    source, out = alpaca_file(tmp_path / "alpaca.json"), tmp_path / "scored.jsonl"
    with FastEndpoint() as endpoint:
        result = score(endpoint, str(source), "-o", str(out))
        assert endpoint.kinds["judge"] == 30 and endpoint.formats > 0  # structured output asked for
    assert result.returncode == 0, result.stderr[-2000:]
    rows = lines(out)
    assert len(rows) == 30
    assert [r["instruction"] for r in rows] == [r["instruction"] for r in json.loads(source.read_text())]
    for n, row in enumerate(rows):
        assert list(row) == ["instruction", "input", "output", "id", "score", "score_reason"]
        assert row["id"] == f"record_{n}"
        assert isinstance(row["score"], int) and 1 <= row["score"] <= 5
        assert row["score_reason"] == f"It rates {row['score']} of 5."
    counts = summary(result.stdout)
    histogram = [sum(r["score"] == k for r in rows) for k in range(1, 6)]
    assert [counts[f"s{k}"] for k in range(1, 6)] == histogram
    assert (counts["records"], counts["written"], counts["low_score"], counts["unparsed"]) == (30, 30, 0, 0)
    assert (counts["sent"], counts["replayed"]) == (30, 0) and counts["tokens"] > 0
    settings = json.loads((tmp_path / "scored.jsonl.score.json").read_text())
    assert settings["backend"]["model"] == "fast-model" and settings["language"] == "en"
    assert settings["summary"]["scores"] == {str(k): n for k, n in zip(range(1, 6), histogram, strict=True)}


def test_min_score_writes_only_records_at_or_above_it_and_the_counts_add_up(tmp_path: Path):
    source, out = alpaca_file(tmp_path / "alpaca.json"), tmp_path / "scored.jsonl"
    with FastEndpoint(seed=4) as endpoint:
        result = score(endpoint, str(source), "-o", str(out), "--min-score", "3")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = lines(out)
    counts = summary(result.stdout)
    assert all(r["score"] >= 3 for r in rows)
    assert counts["written"] == len(rows) == counts["s3"] + counts["s4"] + counts["s5"]
    assert counts["low_score"] == counts["s1"] + counts["s2"] > 0
    assert counts["written"] + counts["low_score"] + counts["unparsed"] == counts["records"] == 30


def test_a_rerun_on_the_same_output_sends_nothing_and_writes_the_same_lines(tmp_path: Path):
    source, out = alpaca_file(tmp_path / "alpaca.json"), tmp_path / "scored.jsonl"
    with FastEndpoint() as endpoint:
        assert score(endpoint, str(source), "-o", str(out)).returncode == 0
        first, sent = out.read_text(), endpoint.kinds["judge"]
        again = score(endpoint, str(source), "-o", str(out))
        assert again.returncode == 0, again.stderr[-2000:]
        assert endpoint.kinds["judge"] == sent == 30
        assert out.read_text() == first
        assert (summary(again.stdout)["sent"], summary(again.stdout)["replayed"]) == (0, 30)
        # Another threshold chooses among the same answers: no request either.
        higher = score(endpoint, str(source), "-o", str(out), "--min-score", "4")
        assert higher.returncode == 0, higher.stderr[-2000:]
        assert endpoint.kinds["judge"] == 30
        assert lines(out) == [r for r in map(json.loads, first.splitlines()) if r["score"] >= 4]


def test_a_stopped_score_resumes_and_sends_only_the_missing_requests(tmp_path: Path):
    source, out = alpaca_file(tmp_path / "alpaca.json"), tmp_path / "scored.jsonl"
    cache = tmp_path / "scored.jsonl.responses.jsonl"
    with FastEndpoint() as endpoint:
        assert score(endpoint, str(source), "-o", str(out)).returncode == 0
        expected = out.read_text()
        # As a score killed after 12 answers leaves it: no OUTPUT, a cache with a torn last line.
        kept = cache.read_text().splitlines(keepends=True)[:12]
        cache.write_text("".join(kept) + '{"key": "torn')
        out.unlink()
        resumed = score(endpoint, str(source), "-o", str(out))
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert endpoint.kinds["judge"] == 30 + 18
    assert (summary(resumed.stdout)["sent"], summary(resumed.stdout)["replayed"]) == (18, 12)
    assert len(lines(out)) == 30 and len(lines(cache)) == 30
    answered = {r["index"] for r in lines(cache)}
    assert answered == {f"record_{n}" for n in range(30)}
    # The fake endpoint draws new scores for the 18 asked again; the 12 replayed lines are as before.
    replayed_ids = {json.loads(line)["index"] for line in kept}
    before = {r["id"]: r for r in map(json.loads, expected.splitlines())}
    assert all(before[r["id"]] == r for r in lines(out) if r["id"] in replayed_ids)


def test_other_records_or_settings_on_an_existing_output_are_refused(tmp_path: Path):
    source, out = alpaca_file(tmp_path / "alpaca.json"), tmp_path / "scored.jsonl"
    with FastEndpoint() as endpoint:
        assert score(endpoint, str(source), "-o", str(out)).returncode == 0
        hotter = score(endpoint, str(source), "-o", str(out), "--judge-temperature", "0.5")
        other = score(endpoint, str(alpaca_file(tmp_path / "other.json", 10)), "-o", str(out))
        stranger = tmp_path / "mine.jsonl"
        stranger.write_text('{"a": 1}\n')
        foreign = score(endpoint, str(source), "-o", str(stranger))
        assert endpoint.kinds["judge"] == 30
        fresh = score(endpoint, str(source), "-o", str(out), "--judge-temperature", "0.5", "--overwrite")
        assert fresh.returncode == 0 and endpoint.kinds["judge"] == 60
    for result, says in (
        (hotter, "was scored with other settings (judge.temperature)"),
        (other, "holds the scores of other records (the input changed)"),
        (foreign, "exists and was not written by `score`"),
    ):
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr
    assert stranger.read_text() == '{"a": 1}\n'
    assert json.loads((tmp_path / "scored.jsonl.score.json").read_text())["judge"]["temperature"] == 0.5


@pytest.mark.parametrize(
    "content, says",
    [
        ('[{"instruction": "Add 2 and 3."}]', "item 0: field 'output' must be a string (missing)"),
        ('{"instruction": "Add.", "output": "5"}\nnot json\n', ":2: invalid JSON"),
        ("", "the file is empty"),
    ],
)
def test_a_bad_input_file_is_one_line_and_exit_2(tmp_path: Path, content: str, says: str):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with FastEndpoint() as endpoint:
        result = score(endpoint, str(bad), "-o", str(tmp_path / "out.jsonl"))
        assert endpoint.kinds["judge"] == 0
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {bad}") and result.stderr.count("\n") == 1, result.stderr
    assert says in result.stderr
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "out.jsonl.score.json").exists()


def test_a_bad_setting_names_its_flag(tmp_path: Path):
    source = alpaca_file(tmp_path / "alpaca.json", 3)
    result = selfinstruct("score", str(source), "-o", str(tmp_path / "o.jsonl"), "--min-score", "6")
    assert result.returncode == 2
    assert result.stderr.startswith("error: --min-score: Input should be less than or equal to 5")


def test_a_config_file_sets_score_settings_and_a_partial_judge_table_keeps_its_defaults(tmp_path: Path):
    toml = tmp_path / "score.toml"
    toml.write_text('min_score = 4\n[judge]\ntemperature = 0.2\n[backend]\nkind = "openai"\n')
    config = load_config(toml, {"concurrency": 3}, {"concurrency": "--concurrency"}, ScoreConfig, "score")
    assert (config.min_score, config.concurrency, config.backend.kind) == (4, 3, "openai")
    assert (config.judge.temperature, config.judge.top_p, config.judge.max_tokens) == (0.2, 1.0, 160)
    toml.write_text("min_scor = 4\n")
    with pytest.raises(
        UserError, match="min_scor: unknown setting — see `python -m selfinstruct score --help`"
    ):
        load_config(toml, {}, {}, ScoreConfig, "score")


@pytest.mark.slow
def test_the_embedded_model_scores_a_dataset_file_with_structured_output(vllm_server, tmp_path: Path):
    dataset = tmp_path / "dataset.jsonl"
    records = [
        ("Add the two numbers.", "2 and 3", "5"),
        ("Name the capital of France.", "", "Paris"),
        ("Translate to French.", "Good morning", "Bonjour"),
        ("Write a haiku about rain.", "", "Soft rain on the roof\nwhispers to the town\nthe puddles shine"),
        ("Is this review positive or negative?", "I loved every minute.", "Positive"),
        ("Sort the numbers in ascending order.", "5, 1, 4", "1, 4, 5"),
    ]  # fmt: skip
    dataset.write_text(
        "".join(
            json.dumps(
                {
                    "instruction": i,
                    "input": x,
                    "output": y,
                    "id": f"machine_task_{n}-0",
                    "is_classification": n == 4,
                }
            )
            + "\n"
            for n, (i, x, y) in enumerate(records)
        )  # fmt: skip
    )
    out = tmp_path / "scored.jsonl"
    result = selfinstruct(
        "score", str(dataset), "-o", str(out), "--backend", "openai", "--base-url", vllm_server.base_url,
        "--concurrency", "6", "--no-progress", timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    counts = summary(result.stdout)
    assert counts["unparsed"] == 0 and counts["written"] == len(records)
    rows = lines(out)
    assert [r["id"] for r in rows] == [f"machine_task_{n}-0" for n in range(len(records))]
    assert [r["is_classification"] for r in rows] == [n == 4 for n in range(len(records))]
    assert all(isinstance(r["score"], int) and 1 <= r["score"] <= 5 for r in rows)
    assert all(isinstance(r["score_reason"], str) for r in rows)
    cached = lines(tmp_path / "scored.jsonl.responses.jsonl")
    assert len(cached) == len(records) and all(r["completion_tokens"] > 0 for r in cached)
