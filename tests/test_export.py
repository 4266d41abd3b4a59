"""`selfinstruct export`: every format read back by the tool that consumes it — datasets for hf and
parquet, trl's SFTTrainer for messages, OpenAI's chat fine-tuning schema for openai, LLaMA-Factory's
layout for sharegpt — the dataset card, and the command's safety (one-line errors, nothing changed)."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
import yaml
from clirun import selfinstruct
from fast_endpoint import FastEndpoint
from pydantic import BaseModel, ConfigDict, Field, model_validator

from selfinstruct.export import chat, messages_row, sharegpt_row, user_turn, validation_tasks
from selfinstruct.locking import exclusive
from selfinstruct.train.data import to_messages

SECRET = "sk-export-test-secret"
RULES = """\
[length]
min_words = 4
max_words = 150

[prefixes]
reject = ["Describe", "Explain"]
"""
RUN_TOML = """\
num_demos = 6

[classification]
temperature = 0.0
top_p = 1.0
max_tokens = 4
"""
ALPACA = [
    {"instruction": "Add the two numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Name the capital of France.", "input": "", "output": "Paris."},
    {"instruction": "Reverse the word.", "input": "stone", "output": "enots"},
    {"instruction": "Give a synonym of happy.", "input": "", "output": ""},  # left out of chat formats
    {"instruction": "Add the two numbers.", "input": "4 and 4", "output": "8"},  # same task as the first
    {"instruction": "Count the letters.", "input": "  ", "output": "0"},
]


# ---- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fast():
    with FastEndpoint(seed=1) as endpoint:
        yield endpoint


def run_cmd(base_url: str, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "selfinstruct", "run", "--backend", "openai", "--base-url", base_url,
        "--model", "fast-model", "-n", "40", "-o", str(out), "--seed", "5", "--no-progress", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(fast, tmp_path_factory) -> Path:
    """A real run against the instant endpoint, with a rules file that rejects some instructions and
    a config file for settings that have no flag."""
    base = tmp_path_factory.mktemp("run")
    (base / "rules.toml").write_text(RULES)
    (base / "run.toml").write_text(RUN_TOML)
    extra = ["--filters", str(base / "rules.toml"), "--config", str(base / "run.toml"), "--concurrency", "4"]
    result = subprocess.run(
        run_cmd(fast.url, base / "run", *extra),
        capture_output=True, text=True, timeout=120, env={**os.environ, "OPENAI_API_KEY": SECRET},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return base / "run"


@pytest.fixture(scope="module")
def dataset(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "dataset.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def hf_dir(run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hf") / "nested" / "my-data"  # missing folders are made
    result = export(run_dir, "hf", out, "--val-fraction", "0.1", "--seed", "3")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def alpaca_file(tmp_path) -> Path:
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(ALPACA))
    return path


def export(path: Path, fmt: str, out: Path, *args: str) -> subprocess.CompletedProcess:
    return selfinstruct("export", str(path), "--format", fmt, "-o", str(out), *args, timeout=120)


def card_parts(folder: Path) -> tuple[dict, str]:
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    head, _, body = text[4:].partition("\n---\n")
    return yaml.safe_load(head), body


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def task_of(record_id: str) -> str:
    return record_id.rpartition("-")[0]


# ---- the user turn: exact strings, the trainer's rule ------------------------------------------

CASES = [
    ("Add the two numbers.", "2 and 3", "Add the two numbers.\n\n2 and 3"),
    ("Name the capital of France.", "", "Name the capital of France."),
    ("Count the letters.", "  \n", "Count the letters."),
    ("Fix the code.", "  x = 1\n", "Fix the code.\n\n  x = 1\n"),
    ("把句子翻译成英文。", "你好", "把句子翻译成英文。\n\n你好"),
]


@pytest.mark.parametrize(("instruction", "input_", "expected"), CASES)
def test_user_turn_is_the_trainers_rule(instruction, input_, expected):
    assert user_turn(instruction, input_) == expected
    trainer = to_messages("x", {"instruction": instruction, "input": input_, "output": "ok"})
    assert trainer[0] == {"role": "user", "content": expected}


def test_chat_rows_exactly():
    record = {"instruction": "Add the two numbers.", "input": "2 and 3", "output": " 5\n"}
    assert chat(record) == [
        {"role": "user", "content": "Add the two numbers.\n\n2 and 3"},
        {"role": "assistant", "content": " 5\n"},  # the output exactly as it is
    ]
    assert messages_row(record, "Be brief.") == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Add the two numbers.\n\n2 and 3"},
            {"role": "assistant", "content": " 5\n"},
        ]
    }
    assert sharegpt_row(record, "Be brief.") == {
        "conversations": [
            {"from": "human", "value": "Add the two numbers.\n\n2 and 3"},
            {"from": "gpt", "value": " 5\n"},
        ],
        "system": "Be brief.",
    }
    assert "system" not in sharegpt_row(record)


def test_validation_tasks_are_whole_seeded_and_about_the_fraction():
    tasks = [f"t{i // 3}" for i in range(300)]  # 100 tasks of 3 records
    held = validation_tasks(tasks, 0.1, seed=7)
    assert held == validation_tasks(tasks, 0.1, seed=7) != validation_tasks(tasks, 0.1, seed=8)
    assert sum(t in held for t in tasks) == 30
    assert validation_tasks(tasks, 0, seed=7) == set()
    assert len(validation_tasks(tasks, 0.001, seed=7)) == 1  # at least one task


# ---- hf: datasets loads the folder; the card -----------------------------------------------------


def test_hf_folder_loads_with_datasets_and_no_task_straddles_the_split(hf_dir, dataset):
    from datasets import load_dataset

    ds = load_dataset(str(hf_dir))
    assert set(ds) == {"train", "validation"}
    assert len(ds["train"]) + len(ds["validation"]) == len(dataset)
    assert 0.05 * len(dataset) < len(ds["validation"]) < 0.2 * len(dataset)
    assert ds["train"].column_names == ["instruction", "input", "output", "id", "is_classification"]
    train_tasks = {task_of(i) for i in ds["train"]["id"]}
    validation_tasks_ = {task_of(i) for i in ds["validation"]["id"]}
    assert train_tasks and validation_tasks_ and not train_tasks & validation_tasks_
    rows = {r["id"]: r for split in ds.values() for r in split}
    assert rows == {
        r["id"]: {k: r[k] for k in ("instruction", "input", "output", "id", "is_classification")}
        for r in dataset
    }
    assert sorted(p.name for p in hf_dir.parent.iterdir()) == ["my-data"]  # no temporary folder or lock left


def test_card_front_matter_has_the_hub_keys(hf_dir, dataset):
    meta, body = card_parts(hf_dir)
    assert list(meta) == [
        "license", "language", "size_categories", "task_categories", "tags", "pretty_name", "configs",
    ]  # fmt: skip
    assert meta["license"] == "unknown"
    assert "The license of this data is unknown" in body
    assert meta["language"] == ["en"]
    assert meta["size_categories"] == ["n<1K"]
    assert meta["task_categories"] == ["text-generation"]
    assert "self-instruct" in meta["tags"]
    assert meta["pretty_name"] == "Self-Instruct data (run)"
    files = {p.name: p.read_bytes() for p in (hf_dir / "data").iterdir()}
    assert meta["configs"] == [
        {
            "config_name": "default",
            "data_files": [{"split": split, "path": f"data/{name}"} for name in sorted(files) for split in
                           [name.partition("-")[0]]],
        }
    ]  # fmt: skip
    assert [split["split"] for split in meta["configs"][0]["data_files"]] == ["train", "validation"]
    for name, data in files.items():  # data/SPLIT-00000-of-00001-SHA256[:16].parquet
        split = name.partition("-")[0]
        assert name == f"{split}-00000-of-00001-{hashlib.sha256(data).hexdigest()[:16]}.parquet"


def test_card_body_says_how_the_run_was_made(hf_dir, run_dir, fast):
    from selfinstruct import __version__

    config = json.loads((run_dir / "config.json").read_text())
    rejected = [json.loads(line) for line in (run_dir / "rejected.jsonl").read_text().splitlines()]
    _, body = card_parts(hf_dir)
    assert "`fast-model`" in body and "backend `openai`" in body
    assert f"`en.jsonl` (selfinstruct fingerprint `{config['inputs']['seeds_sha256']}`" in body
    assert f"`rules.toml` (selfinstruct fingerprint `{config['inputs']['filters_sha256']}`" in body
    assert f"selfinstruct {__version__}" in body
    assert "| ROUGE-L threshold (reject above) | 0.7 |" in body
    assert "| `instructions` | 0.7 | 0.5 | 1024 | 2.0 | 0.0 |" in body
    assert "| seed | 5 |" in body
    reasons = {r["reason"] for r in rejected}
    assert reasons == {"bad_prefix"}
    assert f"| `bad_prefix` | {len(rejected):,} |" in body
    assert "| instructions | 40 | 52,445 |" in body  # Table 1 beside the paper's
    assert "python -m selfinstruct export run --format hf -o my-data --val-fraction 0.1 --seed 3" in body
    assert "@inproceedings{wang-etal-2023-self-instruct" in body and "2023.acl-long.754" in body
    assert fast.url.split("//")[1].split("/")[0] not in body and "127.0.0.1" not in body
    assert SECRET not in (hf_dir / "README.md").read_text()
    assert str(run_dir.parent) not in body  # no local folders


def test_the_cards_run_command_makes_the_same_settings(hf_dir, run_dir, fast, tmp_path):
    """The reconstructed command, run with the endpoint's address for URL, writes the same config.json."""
    _, body = card_parts(hf_dir)
    command = next(line for line in body.splitlines() if line.startswith("python -m selfinstruct run "))
    toml = body.split("```toml\n", 1)[1].split("\n```", 1)[0]
    (tmp_path / "run.toml").write_text(toml)
    (tmp_path / "rules.toml").write_text(RULES)
    args = [fast.url if a == "URL" else a for a in shlex.split(command)[3:]]
    result = subprocess.run(
        [sys.executable, "-m", "selfinstruct", *args, "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    original = json.loads((run_dir / "config.json").read_text())
    again = json.loads((tmp_path / "run" / "config.json").read_text())
    for config in (original, again):
        for key in ("output_dir", "filters"):  # paths; the content hashes under "inputs" must match
            config.pop(key)
    assert again == original


def test_plain_file_card_says_what_the_file_was(alpaca_file, tmp_path):
    from datasets import load_dataset

    out = tmp_path / "alpaca-hf"
    result = export(alpaca_file, "hf", out, "--val-fraction", "0", "--license", "apache-2.0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"exported 6 records as hf: train 6 (5 tasks) -> {out}"
    meta, body = card_parts(out)
    assert meta["license"] == "apache-2.0" and meta["tags"] == ["instruction-tuning"]
    (train,) = (out / "data").iterdir()
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": f"data/{train.name}"}]
    digest = hashlib.sha256(alpaca_file.read_bytes()).hexdigest()
    assert f"`alpaca.json` (sha256 `{digest}`)" in body
    assert "How they were generated is not recorded" in body
    assert "| classification instructions | not known | 11,584 |" in body
    assert "Citation" not in body and "unknown" not in body
    ds = load_dataset(str(out))
    assert set(ds) == {"train"}
    assert ds["train"].column_names == ["instruction", "input", "output", "id"]  # is_classification unknown
    assert ds["train"]["output"] == [r["output"] for r in ALPACA]


def test_a_re_export_under_the_same_name_loads_the_new_rows(alpaca_file, tmp_path):
    """datasets caches a folder whose card lists its files by the folder's name and those paths: the
    file names carry the content's hash, so a re-export never loads the earlier export's rows."""
    from datasets import load_dataset

    name = f"re-export-{os.getpid()}"  # the cache is per folder name, across folders and sessions
    for i, rows in enumerate((ALPACA[:3], ALPACA[3:])):
        alpaca_file.write_text(json.dumps(rows))
        out = tmp_path / str(i) / name
        assert export(alpaca_file, "hf", out, "--val-fraction", "0").returncode == 0
        assert load_dataset(str(out))["train"]["output"] == [r["output"] for r in rows]


def test_chinese_data_is_tagged_zh(tmp_path):
    data = tmp_path / "zh.jsonl"
    rows = [{"instruction": f"写一首关于{s}的诗。", "input": "", "output": "好。"} for s in "春夏秋冬山水"]
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    assert export(data, "hf", tmp_path / "out").returncode == 0
    assert card_parts(tmp_path / "out")[0]["language"] == ["zh"]


# ---- the other formats, each checked by what reads it ---------------------------------------------


def test_parquet_loads_with_datasets(run_dir, dataset, alpaca_file, tmp_path):
    from datasets import load_dataset

    assert export(run_dir, "parquet", tmp_path / "run.parquet").returncode == 0
    ds = load_dataset("parquet", data_files=str(tmp_path / "run.parquet"), split="train")
    assert ds.column_names == ["instruction", "input", "output", "id", "is_classification"]
    assert ds.to_list() == [
        {k: r[k] for k in ("instruction", "input", "output", "id", "is_classification")} for r in dataset
    ]
    assert export(alpaca_file, "parquet", tmp_path / "a.parquet").returncode == 0
    ds = load_dataset("parquet", data_files=str(tmp_path / "a.parquet"), split="train")
    assert ds.column_names == ["instruction", "input", "output", "id"]


def test_alpaca_is_the_records_as_a_json_array(run_dir, dataset, tmp_path):
    assert export(run_dir, "alpaca", tmp_path / "a.json").returncode == 0
    rows = json.loads((tmp_path / "a.json").read_text())
    assert rows == [{k: r[k] for k in ("instruction", "input", "output")} for r in dataset]


class Message(BaseModel):
    """OpenAI chat fine-tuning: a message has a role and string content, nothing else."""

    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1)


class FineTuningLine(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    messages: list[Message] = Field(min_length=2)

    @model_validator(mode="after")
    def shape(self):
        roles = [m.role for m in self.messages]
        assert roles[-1] == "assistant", "ends with the assistant's answer"
        assert "system" not in roles[1:], "a system message only comes first"
        assert "user" in roles, "has a user message"
        return self


def test_openai_lines_validate_against_the_fine_tuning_schema(run_dir, dataset, alpaca_file, tmp_path):
    out = tmp_path / "ft.jsonl"
    assert export(run_dir, "openai", out, "--system", "You are helpful.").returncode == 0
    lines = out.read_text().splitlines()
    assert len(lines) == len(dataset)
    for line in lines:
        FineTuningLine.model_validate_json(line)
    assert json.loads(lines[0])["messages"][0] == {"role": "system", "content": "You are helpful."}

    result = export(alpaca_file, "openai", tmp_path / "a.jsonl")
    assert result.stdout.strip() == (
        f"exported 5 records as openai -> {tmp_path / 'a.jsonl'} (1 with an empty output left out)"
    )
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    for line in lines:
        FineTuningLine.model_validate_json(line)
    assert [json.loads(line)["messages"][0]["content"] for line in lines] == [
        "Add the two numbers.\n\n2 and 3", "Name the capital of France.", "Reverse the word.\n\nstone",
        "Add the two numbers.\n\n4 and 4", "Count the letters.",
    ]  # fmt: skip


def test_sharegpt_is_llama_factorys_layout(alpaca_file, tmp_path):
    out = tmp_path / "s.json"
    assert export(alpaca_file, "sharegpt", out, "--system", "Be brief.").returncode == 0
    rows = json.loads(out.read_text())
    assert isinstance(rows, list) and len(rows) == 5
    for row in rows:
        assert set(row) == {"conversations", "system"} and row["system"] == "Be brief."
        turns = row["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"]  # human in odd places, gpt in even
        assert all(set(t) == {"from", "value"} and isinstance(t["value"], str) for t in turns)
    assert rows[0]["conversations"] == [
        {"from": "human", "value": "Add the two numbers.\n\n2 and 3"},
        {"from": "gpt", "value": "5"},
    ]


@pytest.mark.slow
def test_sfttrainer_trains_a_step_on_the_messages_file(run_dir, tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("trl")
    from datasets import load_dataset
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    from selfinstruct.generation.embedded import prepare_embedded_model

    out = tmp_path / "train.jsonl"
    assert export(run_dir, "messages", out, "--system", "Answer briefly.").returncode == 0
    tokenizer = AutoTokenizer.from_pretrained(prepare_embedded_model())
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    before = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(
            output_dir=str(tmp_path / "sft"), max_steps=1, per_device_train_batch_size=4, max_length=256,
            use_cpu=True, bf16=False, report_to="none", save_strategy="no", logging_steps=1,
            disable_tqdm=True,
        ),
        train_dataset=load_dataset("json", data_files=str(out), split="train"),
        processing_class=tokenizer,
    )  # fmt: skip
    trainer.train()
    assert trainer.state.global_step == 1
    assert torch.isfinite(torch.tensor(trainer.state.log_history[0]["loss"]))
    assert not torch.equal(before, model.model.layers[0].self_attn.q_proj.weight)
    sample = trainer.train_dataset[0]
    text = tokenizer.decode(sample["input_ids"])
    assert "Answer briefly." in text and "<|im_start|>assistant" in text


# ---- safety: one-line errors, nothing changed ----------------------------------------------------


def test_an_unknown_format_is_a_choice_error(run_dir, tmp_path):
    result = export(run_dir, "csv", tmp_path / "out.csv")
    assert_one_line_error(result, "argument --format/-f: invalid choice: 'csv'", "hf")
    assert not (tmp_path / "out.csv").exists()


def test_a_file_with_no_instruction_field(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "Add.", "output": "5"}\n')
    result = export(data, "alpaca", tmp_path / "out.json")
    assert_one_line_error(result, f"{data}:1: no 'instruction' field")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


@pytest.mark.parametrize("fmt", ["alpaca", "messages", "parquet", "hf"])
def test_an_output_that_exists_is_kept_byte_for_byte(run_dir, tmp_path, fmt):
    out = tmp_path / "out"
    if fmt == "hf":
        out.mkdir()
        (out / "README.md").write_text("my card\n")
    else:
        out.write_bytes(b"precious\x00bytes")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    line = assert_one_line_error(export(run_dir, fmt, out))
    assert line == (
        f"error: {out}: exists — pass --overwrite to replace it, or -o with a new path; nothing was changed"
    )
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_overwrite_replaces_an_earlier_export(run_dir, alpaca_file, tmp_path):
    out = tmp_path / "hf"
    assert export(alpaca_file, "hf", out, "--val-fraction", "0").returncode == 0
    result = export(run_dir, "hf", out, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert card_parts(out)[0]["pretty_name"] == "Self-Instruct data (run)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alpaca.json", "hf"]
    file_out = tmp_path / "a.jsonl"
    file_out.write_text("old\n")
    assert export(alpaca_file, "messages", file_out, "--overwrite").returncode == 0
    assert len(file_out.read_text().splitlines()) == 5


def test_overwrite_never_replaces_what_export_did_not_write(run_dir, alpaca_file, tmp_path):
    folder = tmp_path / "project"
    (folder / ".git").mkdir(parents=True)
    (folder / "README.md").write_text("mine\n")
    assert_one_line_error(export(run_dir, "hf", folder, "--overwrite"), "holds more than an exported dataset")
    assert (folder / "README.md").read_text() == "mine\n" and (folder / ".git").is_dir()
    assert_one_line_error(export(run_dir, "alpaca", folder, "--overwrite"), "is a folder")
    assert_one_line_error(export(alpaca_file, "hf", alpaca_file, "--overwrite"), "is a file")
    assert_one_line_error(
        export(alpaca_file, "alpaca", alpaca_file, "--overwrite"), "is what the export reads"
    )
    assert json.loads(alpaca_file.read_text()) == ALPACA
    dataset = run_dir / "dataset.jsonl"
    before = dataset.read_bytes()
    assert_one_line_error(export(run_dir, "messages", dataset, "--overwrite"), "is what the export reads")
    assert dataset.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--format", "alpaca", "--val-fraction", "0.1"], "--val-fraction: only --format hf has splits"),
        (["--format", "parquet", "--license", "mit"], "--license: only --format hf"),
        (["--format", "alpaca", "--system", "Hi."], "--system: --format alpaca has no system message"),
        (["--format", "messages", "--system", " "], "--system: the text is blank"),
        (["--format", "hf", "--val-fraction", "1"], "--val-fraction: 1.0 is outside [0, 1)"),
        (["--format", "hf", "--license", "my license"], "--license: 'my license' is not a license id"),
        (["--format", "hf", "--val-fraction", "0.9"], "--val-fraction 0.9 leaves no training records"),
    ],
)
def test_bad_options_are_one_line(tmp_path, args, fragment):
    data = tmp_path / "one-task.json"
    data.write_text(json.dumps([{"instruction": "Add.", "input": "1 and 2", "output": "3"}] * 3))
    result = selfinstruct("export", str(data), "-o", str(tmp_path / "out"), *args)
    assert_one_line_error(result, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one-task.json"]


def test_an_output_another_export_writes_is_refused(run_dir, tmp_path):
    out = tmp_path / "hf"
    with exclusive(tmp_path / "hf.export", "export"):
        result = export(run_dir, "hf", out)
    assert_one_line_error(result, f"in use by process {os.getpid()} (selfinstruct export)")
    assert not out.exists()


def test_an_output_under_a_file_is_one_line(run_dir, tmp_path):
    (tmp_path / "a-file").write_text("x")
    assert_one_line_error(
        export(run_dir, "alpaca", tmp_path / "a-file" / "out.json"),
        "cannot create its folder (a file has that name)",
    )


def test_a_run_with_no_records_yet(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "machine_instructions.jsonl").write_text("")
    assert_one_line_error(export(run, "hf", tmp_path / "out"), "holds no records yet — nothing to export")


def test_a_write_that_fails_changes_nothing(run_dir, alpaca_file, tmp_path):
    """A file-size limit stands in for a full disk: the earlier export stays, no temporary file is left."""
    out = tmp_path / "hf"
    assert export(alpaca_file, "hf", out, "--val-fraction", "0").returncode == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for fmt, target in (("hf", out), ("alpaca", tmp_path / "a.json")):
        result = subprocess.run(
            [sys.executable, "-m", "selfinstruct", "export", str(run_dir), "-f", fmt, "-o", str(target),
             "--overwrite"],
            capture_output=True, text=True, timeout=120,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000)),
        )  # fmt: skip
        assert_one_line_error(result, f"{target}: cannot write (File too large)")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alpaca.json", "hf"]
