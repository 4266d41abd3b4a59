"""The response cache on resume: a line that is not a valid response is skipped with a warning and
its request sent again; the other run files keep their strictness (test_cli.py)."""

import json
import logging
from pathlib import Path

from clirun import selfinstruct
from fake_endpoint import FakeEndpoint

from selfinstruct.cache import ResponseCache

GOOD = {
    "key": "k1", "stage": "instructions", "index": "0", "text": " Say hi.", "finish_reason": "stop",
    "prompt_tokens": 10, "completion_tokens": 3,
}  # fmt: skip


def test_lines_that_are_not_responses_are_skipped_with_a_warning(tmp_path: Path, caplog):
    path = tmp_path / "responses.jsonl"
    lines = [
        json.dumps(GOOD),
        "this is not JSON",
        json.dumps({"key": "k2", "stage": "instances"}),
        json.dumps(GOOD | {"key": "k3", "text": None}),
        json.dumps(GOOD | {"key": "k4", "prompt_tokens": "10"}),
        json.dumps(GOOD | {"key": "k5", "index": "first"}),
        json.dumps(["a", "list"]),
        json.dumps(
            GOOD | {"key": "k6", "stage": "classification", "index": "machine_task_0", "finish_reason": None}
        ),
    ]
    path.write_text("\n".join(lines) + '\n{"key": "k7", "sta')  # and a torn last line
    with caplog.at_level(logging.WARNING):
        cache = ResponseCache(path)
    cache.close()
    assert [r["key"] for r in cache.records] == ["k1", "k6"]
    assert cache.get("k1").text == " Say hi." and cache.get("k3") is None
    assert [r.getMessage().removeprefix(f"{path}:") for r in caplog.records] == [
        "2: skipping a line that is not a JSON record",
        "3: skipping an invalid record (index: Field required)",
        "4: skipping an invalid record (text: Input should be a valid string)",
        "5: skipping an invalid record (prompt_tokens: Input should be a valid integer)",
        "6: skipping an invalid record (index: an instructions request is numbered (got 'first'))",
        "7: skipping a line that is not a JSON record",
        " dropping an incomplete last line left by an interrupted run",
    ]
    assert path.read_text() == "\n".join(lines) + "\n"  # the skipped lines are kept, the torn tail cut


def test_a_run_resumes_over_a_hand_edited_cache(tmp_path: Path):
    out = tmp_path / "run"

    def run(n: int):
        with FakeEndpoint() as endpoint:
            return selfinstruct(
                "run", "--backend", "openai", "--base-url", endpoint.url, "-n", str(n), "-o", str(out),
                "--concurrency", "1", "--no-progress", timeout=120,
            )  # fmt: skip

    assert run(2).returncode == 0
    cache = out / "responses.jsonl"
    lines = cache.read_text().splitlines()
    first = json.loads(lines[0]) | {"text": None}
    edited = [json.dumps(first), "not JSON", *lines[1:], json.dumps({"key": "abc", "text": "hi"})]
    cache.write_text("\n".join(edited) + "\n")

    result = run(4)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{cache}:1: skipping an invalid record (text: Input should be a valid string)" in result.stderr
    assert f"{cache}:2: skipping a line that is not a JSON record" in result.stderr
    assert f"{cache}:{len(edited)}: skipping an invalid record (stage: Field required)" in result.stderr
    assert "accepted 4/4 instructions" in result.stdout
    assert cache.read_text().startswith("\n".join(edited) + "\n")  # nothing already written is lost
