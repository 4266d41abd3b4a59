"""User errors: one line naming the file or flag, exit code 2, nothing overwritten."""

import subprocess
import sys
from pathlib import Path

import pytest


def selfinstruct(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "selfinstruct", *args], capture_output=True, text=True, timeout=120
    )


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    for fragment in fragments:
        assert fragment in last


def test_help_is_instant():
    result = selfinstruct("run", "--help")
    assert result.returncode == 0 and "--num-instructions" in result.stdout


def test_missing_seed_file(tmp_path: Path):
    assert_user_error(selfinstruct("run", "--seeds", str(tmp_path / "nope.jsonl")), "nope.jsonl", "not found")


def test_malformed_seed_file_names_the_line(tmp_path: Path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"instruction": "Add.", "output": "3"}\n{broken\n')
    assert_user_error(selfinstruct("run", "--seeds", str(seeds)), "seeds.jsonl:2", "invalid JSON")


def test_unknown_config_key(tmp_path: Path):
    config = tmp_path / "run.toml"
    config.write_text("num_instruction = 5\n")
    assert_user_error(
        selfinstruct("run", "--config", str(config)), "run.toml: num_instruction", "unknown setting"
    )


@pytest.mark.parametrize(
    "flag, value", [("--concurrency", "0"), ("--rouge-threshold", "0"), ("--num-instructions", "-1")]
)
def test_invalid_values_name_the_flag(flag, value):
    assert_user_error(selfinstruct("run", flag, value), flag)


def test_existing_run_directory_is_never_overwritten(tmp_path: Path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "dataset.jsonl").write_text('{"instruction": "keep me"}\n')
    assert_user_error(selfinstruct("run", "-o", str(out)), str(out), "not empty")
    assert (out / "dataset.jsonl").read_text() == '{"instruction": "keep me"}\n'


def test_unreachable_endpoint(tmp_path: Path):
    result = selfinstruct(
        "run", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--max-attempts", "2",
        "-o", str(tmp_path / "run"), "--no-progress",
    )  # fmt: skip
    assert_user_error(result, "127.0.0.1:9", "unreachable")


def test_openai_backend_needs_a_url():
    assert_user_error(selfinstruct("run", "--backend", "openai"), "--base-url")
