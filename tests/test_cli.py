"""User errors: one line naming the file or flag, exit code 2, nothing overwritten."""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from clirun import selfinstruct

from selfinstruct.resources import resource_path


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


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--seeds", "{tmp}/empty.jsonl"], ["empty.jsonl", "seed file is empty"]),
        (["--rouge-threshold", "1.5"], ["--rouge-threshold", "less than or equal to 1"]),
        (["-o", "{tmp}/a-file/run"], ["a-file/run", "cannot write the output directory"]),
        (["--config", "{tmp}/missing.toml"], ["missing.toml", "config file not found"]),
        (["--config", "{tmp}/bad.toml"], ["bad.toml", "not valid TOML"]),
        (["--filters", "{tmp}/missing.toml"], ["missing.toml", "filter rules not found"]),
        (["--filters", "{tmp}/bad-rules.toml"], ["bad-rules.toml", "length.min_words"]),
    ],
)
def test_bad_input_table(tmp_path: Path, args, fragments):
    """The cases of docs/errors.md: one line naming the file or flag, exit code 2."""
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "bad.toml").write_text("num_instructions = \n")
    (tmp_path / "bad-rules.toml").write_text("[length]\nmin_words = -3\n")
    assert_user_error(selfinstruct("run", *[a.format(tmp=tmp_path) for a in args]), *fragments)
    assert (tmp_path / "a-file").read_text() == "not a directory"


def test_edited_run_file_names_the_line(tmp_path: Path):
    from selfinstruct.errors import UserError
    from selfinstruct.tasks import recover_jsonl

    path = tmp_path / "machine_instructions.jsonl"
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(UserError, match="machine_instructions.jsonl:2: not a JSON record"):
        recover_jsonl(path)
    assert path.read_text() == '{"id": "a"}\nnot json\n{"id": "b"}\n'


def test_version():
    from selfinstruct import __version__

    result = selfinstruct("--version")
    assert (
        result.returncode == 0 and result.stdout == f"selfinstruct {__version__}\n" == "selfinstruct 0.1.0\n"
    )


@pytest.mark.parametrize(
    "args, fragments",
    [
        (
            ["run", "--config", "{tmp}/folder"],
            ["folder: is a directory, not a file — check the --config path"],
        ),
        (["run", "--config", "{tmp}/latin1.toml"], ["latin1.toml: not UTF-8 text"]),
        (["run", "--filters", "{tmp}/folder"], ["folder: is a directory, not a file — pass --filters"]),
        (["run", "--filters", "{tmp}/latin1.toml"], ["latin1.toml: not UTF-8 text"]),
        (
            ["run", "--filters", "{tmp}/blank-keyword.toml"],
            ["blank-keyword.toml: keywords.words.0: '' is blank"],
        ),
        (["run", "--seeds", "{tmp}/folder"], ["folder: is a directory, not a file — pass --seeds"]),
        (["run", "--seeds", "{tmp}/deep.json"], ["deep.json: JSON nested too deeply to read"]),
        (
            ["run", "--config", "{tmp}/backend-string.toml", "--model", "x"],
            ["backend-string.toml: backend: expected a table ([backend] with kind = ...)"],
        ),
        (
            ["train", "--config", "{tmp}/folder"],
            ["folder: is a directory, not a file — check the --config path"],
        ),
    ],
)
def test_inputs_that_are_folders_deep_or_not_text(tmp_path: Path, args, fragments):
    (tmp_path / "folder").mkdir()
    (tmp_path / "latin1.toml").write_bytes(b"# caf\xe9\n")
    (tmp_path / "blank-keyword.toml").write_text('[keywords]\nwords = [""]\n')
    (tmp_path / "deep.json").write_text("[" * 100_000)
    (tmp_path / "backend-string.toml").write_text('backend = "openai"\n')
    assert_user_error(selfinstruct(*[a.format(tmp=tmp_path) for a in args]), *fragments)


def start_run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    """A run against a closed port: every input is checked and the run directory (config.json) made
    before the endpoint fails, which ends it with a one-line error, resumable."""
    seeds = tmp_path / "seeds.jsonl"
    if not (tmp_path / "filters").exists():  # the first start: the inputs, as files of the user's
        shutil.copy(resource_path("seeds/en.jsonl"), seeds)
        shutil.copytree(resource_path("filters"), tmp_path / "filters")
    return selfinstruct(
        "run", "--seeds", str(seeds), "--filters", str(tmp_path / "filters/default.toml"), "-o",
        str(tmp_path / "run"), "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1",
        "--max-attempts", "1", "--no-progress", *extra,
    )  # fmt: skip


ANOTHER_SEED = (
    '{"id": "colour", "instruction": "Name a colour.", "instances": [{"input": "", "output": "Red."}]}\n'
)


def saved_config(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "run" / "config.json").read_text())


def test_config_json_keeps_the_content_hashes_of_the_inputs(tmp_path: Path):
    assert_user_error(start_run(tmp_path), "unreachable")
    seeds = (tmp_path / "seeds.jsonl").read_bytes()
    rules = [(tmp_path / "filters" / name).read_bytes() for name in ("default.toml", "keywords/en.txt",
                                                                     "keywords/zh.txt")]  # fmt: skip
    assert saved_config(tmp_path)["inputs"] == {
        "seeds_sha256": hashlib.sha256(b"%d:%s" % (len(seeds), seeds)).hexdigest(),
        "filters_sha256": hashlib.sha256(b"".join(b"%d:%s" % (len(r), r) for r in rules)).hexdigest(),
    }


def test_resume_refuses_an_edited_seed_file(tmp_path: Path):
    assert_user_error(start_run(tmp_path), "unreachable")
    saved = (tmp_path / "run" / "config.json").read_text()
    with open(tmp_path / "seeds.jsonl", "a") as f:
        f.write(ANOTHER_SEED)
    assert_user_error(
        start_run(tmp_path),
        f"seeds file content changed since this run started ({tmp_path / 'seeds.jsonl'})",
        "--allow-changed-settings",
    )
    assert (tmp_path / "run" / "config.json").read_text() == saved
    assert_user_error(start_run(tmp_path, "--allow-changed-settings"), "unreachable")
    assert saved_config(tmp_path)["inputs"] != json.loads(saved)["inputs"]  # the new content's hash
    assert_user_error(start_run(tmp_path), "unreachable")  # which a resume now compares against


def test_resume_refuses_edited_filter_rules_or_keyword_files(tmp_path: Path):
    assert_user_error(start_run(tmp_path), "unreachable")
    with open(tmp_path / "filters/keywords/en.txt", "a") as f:
        f.write("colour\n")
    assert_user_error(
        start_run(tmp_path),
        f"filter rules content changed since this run started ({tmp_path / 'filters/default.toml'})",
    )


def test_a_moved_seed_file_with_the_same_content_resumes(tmp_path: Path):
    assert_user_error(start_run(tmp_path), "unreachable")
    (tmp_path / "moved").mkdir()
    (tmp_path / "seeds.jsonl").rename(tmp_path / "moved/seeds.jsonl")
    result = start_run(tmp_path, "--seeds", str(tmp_path / "moved/seeds.jsonl"))
    assert_user_error(result, "unreachable")  # past the settings check
    assert saved_config(tmp_path)["seeds"] == str(tmp_path / "moved/seeds.jsonl")


def test_a_run_directory_saved_without_input_hashes_resumes_as_before(tmp_path: Path):
    assert_user_error(start_run(tmp_path), "unreachable")
    config = saved_config(tmp_path)
    del config["inputs"]
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    with open(tmp_path / "seeds.jsonl", "a") as f:
        f.write(ANOTHER_SEED)
    assert_user_error(start_run(tmp_path), "unreachable")  # no hashes to compare: paths only
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    (tmp_path / "seeds.jsonl").rename(tmp_path / "other.jsonl")
    assert_user_error(start_run(tmp_path, "--seeds", str(tmp_path / "other.jsonl")), "other settings (seeds)")


def test_a_run_directory_saved_before_later_settings_resumes_with_their_defaults(tmp_path: Path):
    assert_user_error(start_run(tmp_path), "unreachable")
    config = saved_config(tmp_path)
    for key in ("judge", "check_language", "check_in_worker"):  # settings an earlier version did not have
        del config[key]
    del config["instances"]["backend"]
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    assert_user_error(start_run(tmp_path), "unreachable")  # past the settings check
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    assert_user_error(start_run(tmp_path, "--judge"), "other settings (judge.enabled)")


@pytest.mark.parametrize(
    "content, fragments",
    [
        ("[1, 2]", ["config.json: not a JSON object of settings"]),
        ('{"backend": "x"}', ["config.json: backend: Input should be a valid dictionary", "(got 'x')"]),
        ('{"num_instructions": "many"}', ["config.json: num_instructions: Input should be a valid integer"]),
        ('{"backend": {"model": 3}}', ["config.json: backend.model: Input should be a valid string"]),
        ('{"inputs": ["abc"]}', ["config.json: inputs: expected an object of sha256 strings"]),
        ("{not json", ["config.json: not valid JSON"]),
    ],
)
def test_a_hand_edited_config_json_is_a_one_line_error(tmp_path: Path, content, fragments):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(content)
    assert_user_error(start_run(tmp_path), *fragments, "restore the file or choose another --output-dir")
    assert (tmp_path / "run" / "config.json").read_text() == content
