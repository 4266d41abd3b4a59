"""The `run` flags are derived from the pydantic settings: names, types, defaults, help, round trip."""

import argparse
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from selfinstruct.cli import build_parser
from selfinstruct.config import Backend, RunConfig, Sampling, StageBackend, load_config
from selfinstruct.errors import UserError
from selfinstruct.flags import Flag, FlagGroup, add_config_flags, config_flags, given_settings

# The flags the run command had before they were derived (README, tests and users type these).
KEPT_FLAGS = {
    "--seeds": "seeds", "--output-dir": "output_dir", "-o": "output_dir",
    "--num-instructions": "num_instructions", "-n": "num_instructions", "--concurrency": "concurrency",
    "--seed": "seed", "--rouge-threshold": "rouge_threshold", "--filters": "filters",
    "--language": "language", "--tokenizer": "tokenizer", "--max-requests": "max_requests",
    "--temperature": "instructions.temperature", "--top-p": "instructions.top_p",
    "--max-tokens": "instructions.max_tokens", "--presence-penalty": "instructions.presence_penalty",
    "--backend": "backend.kind", "--model": "backend.model", "--base-url": "backend.base_urls",
    "--api": "backend.api", "--timeout": "backend.timeout", "--max-attempts": "backend.max_attempts",
    "--server-arg": "backend.server_args",
}  # fmt: skip


def run_parser() -> argparse.ArgumentParser:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices["run"]


def parse(*argv: str) -> tuple[dict, dict]:
    return given_settings(build_parser().parse_args(["run", *argv]))


def test_the_flags_that_existed_keep_their_spelling_and_key():
    keys = {option: action.dest for action in run_parser()._actions for option in action.option_strings}
    assert {flag: keys.get(flag) for flag in KEPT_FLAGS} == KEPT_FLAGS


def test_every_setting_of_the_run_has_a_flag_and_the_stages_theirs_with_a_prefix():
    flags = {flag.key: flag.name for flag in config_flags(RunConfig)}
    sections = {"instructions", "classification", "instances", "judge", "backend"}
    expected = set(RunConfig.model_fields) - sections
    expected |= {f"instructions.{name}" for name in Sampling.model_fields}
    expected |= {f"backend.{name}" for name in Backend.model_fields}
    for stage in ("classification", "instances", "judge"):
        expected |= {f"{stage}.{name}" for name in Sampling.model_fields}
        expected |= {f"{stage}.backend.{name}" for name in StageBackend.model_fields}
    expected |= {"judge.enabled", "judge.min_score", "judge.unparsed"}
    assert set(flags) == expected
    assert flags["judge.backend.base_urls"] == "--judge-base-url"
    assert flags["instances.backend.model"] == "--instances-model"
    assert flags["classification.temperature"] == "--classification-temperature"
    assert (flags["judge.enabled"], flags["judge.min_score"]) == ("--judge", "--min-score")


def test_the_help_shows_each_description_and_the_models_default():
    text = " ".join(run_parser().format_help().split())
    for flag in config_flags(RunConfig):
        assert flag.field.description.rstrip(".") in text, flag.key
    assert "Requests in flight at once (default 16)." in text
    assert "OpenAI presence penalty (default 2)." in text  # the instruction stage's default, not Sampling's
    assert "JSON/JSONL (default seeds/en.jsonl)." in text  # a shipped file, not a local path
    assert "--language {auto,en,zh}" in text and "(default auto)" in text


def test_flags_round_trip_into_the_config():
    overrides, names = parse(
        "--concurrency", "3", "--base-url", "a, b,", "--server-arg=--x=1", "--server-arg", "y",
        "--temperature", "0.3", "-n", "5", "--backend", "openai", "--seeds", "s.jsonl",
    )  # fmt: skip
    config = load_config(None, overrides, names)
    assert config.concurrency == 3 and config.num_instructions == 5 and config.seeds == Path("s.jsonl")
    assert config.backend.base_urls == ["a", "b"] and config.backend.server_args == ["--x=1", "y"]
    assert config.backend.kind == "openai"
    assert (config.instructions.temperature, config.instructions.top_p) == (0.3, 0.5)


def test_only_the_flags_given_override_the_config_file(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text("concurrency = 4\nnum_instructions = 7\n[backend]\nmodel = 'm'\n")
    overrides, names = parse("--concurrency", "2")
    config = load_config(toml, overrides, names)
    assert (config.concurrency, config.num_instructions, config.backend.model) == (2, 7, "m")


@pytest.mark.parametrize("flag", ["-n", "--num-instructions", "--num-inst"])
def test_errors_name_the_flag_as_typed(flag):
    with pytest.raises(UserError, match=f"^{'--num-instructions' if flag == '--num-inst' else flag}: "):
        load_config(None, *parse(flag, "0"))


class Judge(BaseModel):
    model: str | None = Field(None, description="Judge model.")
    kind: Annotated[Literal["a", "b"], Flag("backend")] = Field("a", description="Judge backend.")


class Toy(BaseModel):
    dry_run: bool = Field(False, description="Plan only.")
    cost_budget: Annotated[float | None, Flag(short="-c")] = Field(None, description="Most dollars.")
    judge: Annotated[Judge, FlagGroup("judge-")] = Field(default_factory=Judge, description="The judge.")
    hidden: Judge = Field(default_factory=Judge, description="A section without flags.")


def test_a_new_field_is_a_new_flag():
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Toy, "--config")
    args = parser.parse_args(["--dry-run", "-c", "1.5", "--judge-model", "j", "--judge-backend", "b"])
    assert given_settings(args)[0] == {
        "dry_run": True, "cost_budget": 1.5, "judge.model": "j", "judge.kind": "b"
    }  # fmt: skip
    assert given_settings(parser.parse_args(["--no-dry-run"])) == (
        {"dry_run": False},
        {"dry_run": "--no-dry-run"},
    )
    assert "Plan only (default off)." in " ".join(parser.format_help().split())
    assert [flag.name for flag in config_flags(Toy)] == [
        "--dry-run",
        "--cost-budget",
        "--judge-model",
        "--judge-backend",
    ]
