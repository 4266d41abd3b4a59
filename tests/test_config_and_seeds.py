import json
from pathlib import Path

import pytest

from selfinstruct.config import load_config, public_dict
from selfinstruct.errors import UserError
from selfinstruct.tasks import load_seeds


def test_defaults_follow_the_paper():
    cfg = load_config(None, {}, {})
    assert cfg.num_demos == 8 and cfg.num_machine_demos == 2
    assert cfg.rouge_threshold == 0.7
    ins = cfg.instructions
    assert (ins.temperature, ins.top_p, ins.presence_penalty, ins.max_tokens) == (0.7, 0.5, 2.0, 1024)
    assert (cfg.classification.temperature, cfg.classification.max_tokens) == (0.0, 3)
    assert cfg.backend.kind == "embedded"
    assert cfg.seeds.name == "en.jsonl" and cfg.seeds.exists()


def test_toml_and_cli_overrides(tmp_path: Path):
    toml = tmp_path / "run.toml"
    toml.write_text(
        'num_instructions = 50\nconcurrency = 4\n[backend]\nkind = "openai"\n[instructions]\ntop_p = 0.9\n'
    )
    cfg = load_config(toml, {"concurrency": 8, "instructions.temperature": 1.0}, {})
    assert (cfg.num_instructions, cfg.concurrency) == (50, 8)
    assert (cfg.instructions.top_p, cfg.instructions.temperature) == (0.9, 1.0)
    assert cfg.backend.kind == "openai"
    assert json.loads(json.dumps(public_dict(cfg)))["backend"]["kind"] == "openai"


def test_unknown_key_names_the_file_and_key(tmp_path: Path):
    toml = tmp_path / "run.toml"
    toml.write_text("[backend]\nbase_url = 'http://x'\n")
    with pytest.raises(UserError, match=r"run.toml: backend.base_url: unknown setting"):
        load_config(toml, {}, {})


@pytest.mark.parametrize(
    "key, flag, value, message",
    [
        ("concurrency", "--concurrency", 0, "--concurrency: Input should be greater than or equal to 1"),
        (
            "rouge_threshold",
            "--rouge-threshold",
            1.5,
            "--rouge-threshold: Input should be less than or equal to 1",
        ),
        ("num_instructions", "--num-instructions", -3, "--num-instructions: Input should be greater than 0"),
    ],
)
def test_invalid_cli_values_name_the_flag(key, flag, value, message):
    with pytest.raises(UserError, match=message):
        load_config(None, {key: value}, {key: flag})


def test_bad_toml_is_one_clear_error(tmp_path: Path):
    toml = tmp_path / "run.toml"
    toml.write_text("num_instructions = \n")
    with pytest.raises(UserError, match="run.toml: not valid TOML"):
        load_config(toml, {}, {})


def test_load_seed_format_and_alpaca_formats(tmp_path: Path):
    seed = tmp_path / "seed.jsonl"
    seed.write_text(
        json.dumps({"id": "t1", "name": "n", "instruction": "Do it.", "is_classification": True,
                    "instances": [{"input": "", "output": "done"}]}) + "\n"
    )  # fmt: skip
    [task] = load_seeds(seed)
    assert (task.id, task.is_classification, task.instances[0].output) == ("t1", True, "done")

    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": "Add.", "input": "1, 2", "output": "3"}]))
    [task] = load_seeds(alpaca)
    assert (task.id, task.instruction, task.instances[0].input) == ("seed_task_0", "Add.", "1, 2")

    alpaca_jsonl = tmp_path / "alpaca.jsonl"
    alpaca_jsonl.write_text(
        '{"instruction": "Add.", "input": "", "output": "3"}\n\n{"instruction": "Sub.", "output": "1"}\n'
    )
    assert [t.instruction for t in load_seeds(alpaca_jsonl)] == ["Add.", "Sub."]


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "seed file is empty"),
        ('{"instruction": "ok", "output": "x"}\n{"instruction": \n', r":2: invalid JSON"),
        ('{"instruction": "ok", "output": "x"}\n{"output": "x"}\n', r":2: field 'instruction'"),
        ("[1, 2]", r"item 0: expected a JSON object"),
    ],
)
def test_seed_errors_name_file_and_line(tmp_path: Path, content, message):
    path = tmp_path / "seeds.jsonl"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_seeds(path)


def test_missing_seed_file(tmp_path: Path):
    with pytest.raises(UserError, match="seed file not found"):
        load_seeds(tmp_path / "nope.jsonl")


def test_shipped_seed_set_loads():
    from selfinstruct.resources import resource_path

    tasks = load_seeds(resource_path("seeds/en.jsonl"))
    assert len(tasks) >= 50
    assert all(t.instances for t in tasks)


BOM = "\ufeff"


@pytest.mark.parametrize(
    "name, content",
    [
        ("seeds.jsonl", '{"instruction": "Add.", "output": "3"}\n{"instruction": "Sub.", "output": "1"}\n'),
        ("seeds.json", '[{"instruction": "Add.", "output": "3"}, {"instruction": "Sub.", "output": "1"}]'),
    ],
)
def test_a_byte_order_mark_is_not_part_of_the_text(tmp_path: Path, name, content):
    """Windows editors save UTF-8 with a BOM; seeds and training data read the same with or without."""
    from selfinstruct.train.data import load_conversations

    path = tmp_path / name
    path.write_text(BOM + content, encoding="utf-8")
    assert [t.instruction for t in load_seeds(path)] == ["Add.", "Sub."]
    assert [m[0]["content"] for m in load_conversations(path)] == ["Add.", "Sub."]


@pytest.mark.parametrize(
    "content, message",
    [
        ("[" * 100_000, "seeds.jsonl: JSON nested too deeply to read"),
        (
            '{"instruction": "ok", "output": "x"}\n' + '{"a": ' * 100_000,
            "seeds.jsonl:2: JSON nested too deeply",
        ),
    ],
)
def test_deeply_nested_json_is_one_error_naming_the_file(tmp_path: Path, content, message):
    path = tmp_path / "seeds.jsonl"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_seeds(path)


def test_a_backend_string_where_a_table_belongs_names_the_file(tmp_path: Path):
    toml = tmp_path / "run.toml"
    toml.write_text('backend = "openai"\n')
    expected = r"run.toml: backend: expected a table \(\[backend\] with kind = \.\.\.\) — got 'openai'"
    with pytest.raises(UserError, match=expected):
        load_config(toml, {"backend.model": "x"}, {"backend.model": "--model"})  # the flag sets a key in it
    with pytest.raises(UserError, match=expected):
        load_config(toml, {}, {})


def test_config_that_is_a_directory_or_not_utf8_or_has_a_bom(tmp_path: Path):
    with pytest.raises(UserError, match=f"{tmp_path}: is a directory, not a file — check the --config path"):
        load_config(tmp_path, {}, {})
    toml = tmp_path / "run.toml"
    toml.write_bytes(b"num_instructions = 5\n# caf\xe9\n")  # Latin-1
    with pytest.raises(UserError, match="run.toml: not UTF-8 text"):
        load_config(toml, {}, {})
    toml.write_text(BOM + "num_instructions = 5\n", encoding="utf-8")
    assert load_config(toml, {}, {}).num_instructions == 5


def test_a_partial_stage_table_keeps_that_stages_defaults(tmp_path):
    from selfinstruct.config import load_config

    config = load_config(None, {"instructions.temperature": 0.5}, {})
    assert config.instructions.temperature == 0.5
    assert (config.instructions.presence_penalty, config.instructions.top_p) == (2.0, 0.5)
    toml = tmp_path / "run.toml"
    toml.write_text("[classification]\nmax_tokens = 4\n")
    config = load_config(toml, {}, {})
    assert config.classification.max_tokens == 4
    assert (config.classification.temperature, config.classification.top_p) == (0.0, 1.0)
