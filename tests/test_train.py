"""The LoRA SFT trainer on the CPU, with real models: a tiny random Llama for speed, the embedded
SmolLM2-135M-Instruct for the saved adapter and the merged model."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import pytest
from clirun import selfinstruct

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from selfinstruct.errors import UserError  # noqa: E402
from selfinstruct.generation.embedded import prepare_embedded_model  # noqa: E402
from selfinstruct.locking import exclusive  # noqa: E402
from selfinstruct.train.config import TrainConfig, check_inputs, claim_output_dir  # noqa: E402
from selfinstruct.train.data import format_example, load_conversations, render_plain  # noqa: E402

RECORDS = [
    {"instruction": "Add the two numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Name the capital of France.", "input": "", "output": "Paris is the capital of France."},
    {"instruction": "Reverse the word.", "input": "stone", "output": "enots"},
    {"instruction": "Is the review positive or negative?", "input": "I loved it.", "output": "positive"},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
    {"instruction": "Give a synonym of happy.", "input": "", "output": "Joyful."},
    {"instruction": "Count the letters.", "input": "cat", "output": "3"},
    {"instruction": "Write the next number.", "input": "1, 2, 3", "output": "4"},
]
TINY_MAX_POSITIONS = 128


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and sum(line.startswith("error: ") for line in lines) == 1
    for fragment in fragments:
        assert fragment in lines[-1]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under the folder with its bytes (None for a folder)."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))
    }


def interrupted_job(out: Path, data: Path, base: Path) -> Path:
    """What a job stopped at step 3, before its first checkpoint, leaves: settings, log, lock, runs/."""
    out.mkdir(parents=True)
    cfg = TrainConfig(data=data, output_dir=out, base_model=str(base), max_steps=2, save_steps=50)
    (out / "train_config.json").write_text(json.dumps(cfg.model_dump(mode="json")))
    write_jsonl(out / "train_log.jsonl", [{"step": step, "loss": 99.0} for step in (1, 2, 3)])
    (out / ".selfinstruct.lock").write_text("4321\n")
    (out / "runs" / "Dec01_10-00-00_host").mkdir(parents=True)
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "dataset.jsonl", RECORDS)


@pytest.fixture(scope="module")
def embedded() -> Path:
    return prepare_embedded_model()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, embedded) -> Path:
    """A randomly initialised 2-layer Llama (hidden 64) with the embedded model's tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(embedded)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=TINY_MAX_POSITIONS,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=0.2,  # logits big enough that a few LoRA steps move the loss clearly
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_trainer(data: Path, base: Path, out: Path, **settings):
    """An SFTTrainer for the tiny model, built the way `train` builds it."""
    from selfinstruct.train.trainer import build_trainer, load_base_model, load_tokenizer

    cfg = TrainConfig(
        data=data, output_dir=out, base_model=str(base), max_length=TINY_MAX_POSITIONS, **settings
    )
    inputs = check_inputs(cfg, resume=False)
    out.mkdir(parents=True)
    tokenizer = load_tokenizer(inputs.base_model)
    chat = cfg.template == "auto" and bool(tokenizer.chat_template)
    rows = [format_example(m, chat) for m in inputs.conversations]
    model = load_base_model(inputs.base_model, cfg, "cpu")
    return build_trainer(cfg, model, tokenizer, rows, [], "cpu", progress=False), tokenizer


def fixed_batch(trainer, n: int = 4) -> dict:
    return trainer.data_collator([trainer.train_dataset[i] for i in range(n)])


def batch_loss(model, batch: dict) -> float:
    model.eval()
    with torch.no_grad():
        return model(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels")}).loss.item()


# ---- training updates the adapter only, and learns -------------------------------------------------


def test_a_few_steps_train_the_adapter_only_and_lower_the_loss(data, tiny_model, tmp_path):
    trainer, _ = tiny_trainer(
        data,
        tiny_model,
        tmp_path / "out",
        max_steps=8,
        learning_rate=2e-2,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        lora_dropout=0.0,
        save_steps=100,
    )
    model = trainer.model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    batch = fixed_batch(trainer)
    loss_before = batch_loss(model, batch)

    trainer.train()

    lora = [name for name in before if "lora_" in name]
    frozen = [name for name in before if "lora_" not in name]
    assert lora and frozen
    params = dict(model.named_parameters())
    assert all(params[name].requires_grad for name in lora)
    assert not any(params[name].requires_grad for name in frozen)
    assert all(not torch.equal(before[name], params[name]) for name in lora if "lora_B" in name)
    assert all(torch.equal(before[name], params[name]) for name in frozen)
    assert batch_loss(model, batch) < loss_before - 1.0

    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == list(range(1, 9))
    assert {"loss", "learning_rate", "tokens_per_second", "epoch"} <= set(log[0])
    assert all(row["tokens_per_second"] > 0 for row in log)


def test_adalora_allocates_ranks_as_it_trains(data, tiny_model, tmp_path):
    trainer, _ = tiny_trainer(
        data, tiny_model, tmp_path / "out", method="adalora", max_steps=6, learning_rate=1e-2, save_steps=100
    )
    config = trainer.model.peft_config["default"]
    assert config.total_step == 6
    trainer.train()
    assert config.rank_pattern  # update_and_allocate ran and decided the ranks


# ---- the loss covers the response only -------------------------------------------------------------


def test_labels_mask_exactly_the_prompt_and_the_padding(data, tiny_model, tmp_path):
    trainer, tokenizer = tiny_trainer(data, tiny_model, tmp_path / "out")
    batch = fixed_batch(trainer, n=len(RECORDS))
    assert batch["input_ids"].shape[0] == len(RECORDS)
    padded = 0
    for i, messages in enumerate(load_conversations(data)):
        prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True)
        full = tokenizer.apply_chat_template(messages, tokenize=True)
        prompt, full = _ids(prompt), _ids(full)
        assert full[: len(prompt)] == prompt
        ids, labels = batch["input_ids"][i].tolist(), batch["labels"][i].tolist()
        assert ids[: len(full)] == full
        expected = [-100] * len(prompt) + full[len(prompt) :] + [-100] * (len(ids) - len(full))
        assert labels == expected
        padded += len(ids) > len(full)
        response = tokenizer.decode([t for t in labels if t != -100])
        assert response == messages[-1]["content"] + "<|im_end|>\n"
    assert padded  # the batch did pad some records


def test_plain_template_masks_the_prompt_too(data, tiny_model, tmp_path):
    trainer, tokenizer = tiny_trainer(data, tiny_model, tmp_path / "out", template="plain")
    batch = fixed_batch(trainer, n=2)
    for i, messages in enumerate(load_conversations(data)[:2]):
        prompt = tokenizer(render_plain(messages[:-1]))["input_ids"]
        labels = batch["labels"][i].tolist()
        assert batch["input_ids"][i].tolist()[: len(prompt)] == prompt
        assert labels[: len(prompt)] == [-100] * len(prompt)
        response = [t for t in labels[len(prompt) :] if t != -100]
        assert tokenizer.decode(response) == messages[-1]["content"] + tokenizer.eos_token


def _ids(value) -> list[int]:
    return list(value["input_ids"] if isinstance(value, dict) or hasattr(value, "keys") else value)


def test_packed_records_do_not_attend_to_each_other(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", RECORDS * 2)
    trainer, _ = tiny_trainer(data, tiny_model, tmp_path / "out", packing=True)
    row = next(r for r in trainer.train_dataset if len(r["seq_lengths"]) >= 2)
    batch = trainer.data_collator([row])
    first, second = row["seq_lengths"][:2]
    model = trainer.model.eval()
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        alone = model(input_ids=batch["input_ids"][:, first : first + second]).logits[0]
    assert torch.allclose(packed[first : first + second], alone, atol=1e-4)


# ---- position interpolation ------------------------------------------------------------------------


def test_linear_rope_doubles_the_window_and_runs_past_the_old_one(data, tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    from selfinstruct.train.trainer import load_trained, train

    cfg = TrainConfig(
        data=data,
        output_dir=tmp_path / "out",
        base_model=str(tiny_model),
        max_steps=1,
        max_length=TINY_MAX_POSITIONS,
        rope_scaling="linear",
        rope_factor=2,
        merge=True,
    )
    train(cfg, progress=False)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "merged")
    model, _ = load_trained(tmp_path / "out")
    for m in (merged, model):
        config = m.config
        assert config.max_position_embeddings == 2 * TINY_MAX_POSITIONS
        assert config.rope_parameters == {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
        ids = torch.randint(0, 1000, (1, TINY_MAX_POSITIONS + 72))
        with torch.no_grad():
            logits = m(input_ids=ids).logits
        assert logits.shape[1] == TINY_MAX_POSITIONS + 72
        assert torch.isfinite(logits).all()


# ---- the CLI ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, embedded, data) -> tuple[subprocess.CompletedProcess, Path]:
    """One real CLI run on the embedded model: 2 steps, an eval split, --merge."""
    out = tmp_path_factory.mktemp("cli") / "sft"
    result = selfinstruct(
        "train",
        "--data",
        str(data),
        "--output-dir",
        str(out),
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--max-length",
        "128",
        "--eval-fraction",
        "0.25",
        "--eval-steps",
        "1",
        "--merge",
        "--no-progress",
    )
    return result, out


def test_cli_writes_adapter_log_plot_and_merged_model(cli_run):
    result, out = cli_run
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["tokens_per_second"] > 0
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "loss_curve.png"):
        assert (out / name).is_file(), name
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2]
    assert [r["step"] for r in log if "eval_loss" in r] == [1, 2]


def test_saved_adapter_reloads_with_peft_and_generates(cli_run, embedded):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, out = cli_run
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(embedded), out)
    lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # trained, not the zero init
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Add the two numbers.\n\n2 and 3"}], add_generation_prompt=True
    )
    ids = torch.tensor([_ids(prompt)])
    generated = model.generate(input_ids=ids, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > ids.shape[1]


def test_merged_model_loads_with_plain_transformers(cli_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, out = cli_run
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    assert not any("lora" in name for name, _ in merged.named_parameters())
    tokenizer = AutoTokenizer.from_pretrained(out / "merged")
    ids = tokenizer("Name the capital of France.", return_tensors="pt").input_ids
    assert merged.generate(input_ids=ids, max_new_tokens=3, do_sample=False).shape[1] > ids.shape[1]


def test_cli_refuses_a_used_output_dir(cli_run, data):
    _, out = cli_run
    assert_user_error(selfinstruct("train", "--data", str(data), "-o", str(out)), str(out), "not empty")


def test_resume_continues_from_the_last_checkpoint_with_the_saved_settings(data, tiny_model, tmp_path):
    from selfinstruct.train.trainer import train

    out = tmp_path / "out"
    cfg = TrainConfig(data=data, output_dir=out, base_model=str(tiny_model), max_steps=2, save_steps=2)
    assert train(cfg, progress=False)["steps"] == 2
    result = selfinstruct("train", "-o", str(out), "--resume", "--max-steps", "3", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["steps"] == 3
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2, 3]
    assert json.loads((out / "train_config.json").read_text())["max_steps"] == 3


def test_a_rerun_where_the_job_saved_no_checkpoint_starts_afresh(data, tiny_model, tmp_path):
    from selfinstruct.train.trainer import train

    out = interrupted_job(tmp_path / "out", data, tiny_model)
    cfg = TrainConfig(data=data, output_dir=out, base_model=str(tiny_model), max_steps=2, save_steps=2)
    assert train(cfg, progress=False)["steps"] == 2
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2]  # the stale log is gone, not mixed in
    assert all(row["loss"] != 99.0 for row in log)
    assert (out / "adapter_model.safetensors").is_file() and (out / "checkpoint-2").is_dir()


def test_resume_where_no_checkpoint_was_saved_starts_afresh(data, tiny_model, tmp_path):
    out = interrupted_job(tmp_path / "out", data, tiny_model)
    result = selfinstruct("train", "-o", str(out), "--resume", "--max-steps", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "no checkpoint was saved there yet — starting afresh" in result.stderr
    assert "resuming with changed" not in result.stderr  # max_steps 2 -> 1, but no schedule to continue
    assert json.loads(result.stdout.strip().splitlines()[-1])["steps"] == 1
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1] and log[0]["loss"] != 99.0


@pytest.mark.parametrize(
    "extra, resume, fragment",
    [
        ("notes.txt", False, "output directory is not empty"),
        ("notes.txt", True, "no checkpoint to resume from"),
        ("adapter_model.safetensors", False, "output directory is not empty"),
        ("runs", False, "output directory is not empty"),  # a file named runs, not the Trainer's folder
    ],
)
def test_a_folder_with_more_than_an_unsaved_job_is_refused(
    data, tiny_model, tmp_path, extra, resume, fragment
):
    out = interrupted_job(tmp_path / "out", data, tiny_model)
    if extra == "runs":
        (out / "runs" / "Dec01_10-00-00_host").rmdir()
        (out / "runs").rmdir()
    (out / extra).write_text("kept\n")
    before = snapshot(out)
    args = ["--resume"] if resume else []
    result = selfinstruct(
        "train", "--data", str(data), "-o", str(out), "--base-model", str(tiny_model), *args
    )
    assert_user_error(result, str(out), fragment)
    assert snapshot(out) == before


def test_an_output_dir_that_is_a_file_is_refused(data, tmp_path):
    target = tmp_path / "sft"
    target.write_text("a file\n")
    assert_user_error(selfinstruct("train", "--data", str(data), "-o", str(target)), str(target), "is a file")
    assert target.read_text() == "a file\n"


def test_a_second_train_on_a_folder_in_use_is_refused_and_changes_nothing(data, tiny_model, tmp_path):
    out = interrupted_job(tmp_path / "out", data, tiny_model)
    with exclusive(out, "train"):
        before = snapshot(out)
        result = selfinstruct("train", "--data", str(data), "-o", str(out), "--base-model", str(tiny_model))
        assert_user_error(result, str(out), f"in use by process {os.getpid()}", "selfinstruct train")
        assert snapshot(out) == before


def test_train_holds_the_lock_it_checks_the_folder_under(data, tiny_model, tmp_path):
    """The lock of the job itself, taken after the early checks: the folder is created, then locked."""
    from selfinstruct.train.trainer import train

    out = tmp_path / "new" / "sft"
    cfg = TrainConfig(data=data, output_dir=out, base_model=str(tiny_model), max_steps=1)
    inputs = check_inputs(cfg, resume=False)
    out.mkdir(parents=True)
    with exclusive(out, "train"):
        with pytest.raises(UserError, match=f"in use by process {os.getpid()}"):
            train(cfg, progress=False, inputs=inputs)
    assert [p.name for p in out.iterdir()] == [".selfinstruct.lock"]
    with claim_output_dir(out, resume=False) as checkpoint:  # released: the job can take it now
        assert checkpoint is None
        with pytest.raises(UserError, match=f"in use by process {os.getpid()}"):
            with exclusive(out, "train"):
                pass


# ---- records longer than --max-length -----------------------------------------------------------------


LONG_PROMPT = "Summarize the following text. " + " ".join(["The river runs past the old mill."] * 8)


def test_records_all_longer_than_max_length_are_one_line_and_the_rerun_starts_afresh(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    from selfinstruct.train.trainer import train

    data = write_jsonl(
        tmp_path / "long.jsonl", [{"instruction": LONG_PROMPT, "output": "A mill by a river."}] * 3
    )
    out = tmp_path / "out"
    args = ["--data", str(data), "-o", str(out), "--base-model", str(tiny_model), "--max-length", "32"]
    result = selfinstruct("train", *args, "--max-steps", "1", "--no-progress")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    messages = [
        {"role": "user", "content": LONG_PROMPT},
        {"role": "assistant", "content": "A mill by a river."},
    ]
    length = len(_ids(tokenizer.apply_chat_template(messages, tokenize=True)))
    assert 32 < length < TINY_MAX_POSITIONS
    assert_user_error(
        result,
        f"{data}: all 3 training records are longer than --max-length 32 ({length} tokens",
        f"raise --max-length to {length} or shorten the records",
    )
    assert {p.name for p in out.iterdir()} <= {"train_config.json", ".selfinstruct.lock"}

    cfg = TrainConfig(data=data, output_dir=out, base_model=str(tiny_model), max_length=length, max_steps=1)
    assert train(cfg, progress=False)["steps"] == 1


def test_some_records_longer_than_max_length_are_cut_or_left_out(tiny_model, tmp_path, caplog):
    from selfinstruct.train.trainer import check_lengths

    long_response = {"instruction": "Describe the mill.", "output": LONG_PROMPT * 3}
    records = RECORDS + [{"instruction": LONG_PROMPT * 3, "output": "Short."}, long_response]
    data = write_jsonl(tmp_path / "mixed.jsonl", records)
    trainer, tokenizer = tiny_trainer(data, tiny_model, tmp_path / "out")
    cfg = TrainConfig(data=data, output_dir=tmp_path / "out", max_length=TINY_MAX_POSITIONS)
    rows = [format_example(messages, chat=True) for messages in load_conversations(data)]
    with caplog.at_level(logging.WARNING, logger="selfinstruct.train.trainer"):
        check_lengths(cfg, tokenizer, [(rows, trainer.train_dataset), ([], None)])
    assert f"1 of {len(records)} training records left out" in caplog.text
    lengths = sorted(len(row["input_ids"]) for row in trainer.train_dataset)
    assert len(lengths) == len(records) - 1 and lengths[-1] == TINY_MAX_POSITIONS  # the long response is cut


def test_packed_rows_are_not_taken_for_records_left_out(tiny_model, tmp_path, caplog):
    from selfinstruct.train.trainer import check_lengths

    data = write_jsonl(tmp_path / "d.jsonl", RECORDS * 2)
    trainer, tokenizer = tiny_trainer(data, tiny_model, tmp_path / "out", packing=True)
    assert len(trainer.train_dataset) < len(RECORDS) * 2  # several records per row
    cfg = TrainConfig(data=data, output_dir=tmp_path / "out", max_length=TINY_MAX_POSITIONS, packing=True)
    rows = [format_example(messages, chat=True) for messages in load_conversations(data)]
    with caplog.at_level(logging.WARNING, logger="selfinstruct.train.trainer"):
        check_lengths(cfg, tokenizer, [(rows, trainer.train_dataset), ([], None)])
    assert "left out" not in caplog.text


# ---- user errors: one line, exit code 2 --------------------------------------------------------------


def test_missing_data_file(tmp_path):
    result = selfinstruct("train", "--data", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o"))
    assert_user_error(result, "nope.jsonl", "not found")


def test_empty_data_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    result = selfinstruct("train", "--data", str(tmp_path / "empty.jsonl"), "-o", str(tmp_path / "o"))
    assert_user_error(result, "empty.jsonl", "empty")


def test_malformed_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n" + '{"instruction": "x", \n')
    assert_user_error(
        selfinstruct("train", "--data", str(path), "-o", str(tmp_path / "o")), "bad.jsonl:2", "JSON"
    )


def test_record_missing_a_field(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [RECORDS[0], {"instruction": "No output here."}])
    result = selfinstruct("train", "--data", str(path), "-o", str(tmp_path / "o"))
    assert_user_error(result, "d.jsonl:2", "'output'")


def test_chat_record_must_end_with_the_response(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "Hi"}]}])
    result = selfinstruct("train", "--data", str(path), "-o", str(tmp_path / "o"))
    assert_user_error(result, "chat.jsonl:1", "assistant")


def test_nonexistent_base_model_path(data, tmp_path):
    result = selfinstruct("train", "--data", str(data), "-o", str(tmp_path / "o"), "--base-model", "/no/such")
    assert_user_error(result, "/no/such", "does not exist")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--lora-r", "0"], "--lora-r"),
        (["--eval-fraction", "1.5"], "--eval-fraction"),
        (["--rope-factor", "2"], "--rope-scaling and --rope-factor"),
        (["--method", "qlora"], "qlora"),
        (["--resume"], "no checkpoint"),
    ],
)
def test_bad_options(data, tmp_path, args, fragment):
    assert_user_error(selfinstruct("train", "--data", str(data), "-o", str(tmp_path / "o"), *args), fragment)


def test_unknown_config_key(data, tmp_path):
    config = tmp_path / "sft.toml"
    config.write_text(f'data = "{data}"\noutput_dir = "{tmp_path / "o"}"\nlora_rank = 4\n')
    assert_user_error(
        selfinstruct("train", "--config", str(config)), "sft.toml: lora_rank", "unknown setting"
    )


def test_config_file_with_flag_overrides(data, tmp_path):
    from selfinstruct.train.config import load_train_config

    config = tmp_path / "sft.toml"
    config.write_text(
        f'data = "{data}"\noutput_dir = "{tmp_path / "o"}"\nlora_r = 4\n'
        'target_modules = ["q_proj", "k_proj"]\nrope_scaling = "linear"\nrope_factor = 4.0\n'
    )
    cfg = load_train_config(config, {"lora_r": 16, "target_modules": "all-linear", "packing": True})
    assert (cfg.lora_r, cfg.target_modules, cfg.packing, cfg.rope_factor) == (16, ["all-linear"], True, 4.0)
    assert cfg.data == data and cfg.method == "lora"


# ---- reading the other layouts ------------------------------------------------------------------------


def test_alpaca_json_and_chat_jsonl_are_read(tmp_path):
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps(RECORDS[:2]))
    chat = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello."},
                    {"role": "user", "content": "Bye"},
                    {"role": "assistant", "content": "Goodbye."},
                ]
            }
        ],
    )
    assert load_conversations(alpaca)[0] == [
        {"role": "user", "content": "Add the two numbers.\n\n2 and 3"},
        {"role": "assistant", "content": "5"},
    ]
    example = format_example(load_conversations(chat)[0], chat=True)
    assert [m["role"] for m in example["prompt"]] == ["system", "user", "assistant", "user"]
    assert example["completion"] == [{"role": "assistant", "content": "Goodbye."}]
    plain = format_example(load_conversations(alpaca)[1], chat=False)
    assert plain["prompt"].endswith("### Instruction:\nName the capital of France.\n\n### Response:\n")
    assert plain["completion"] == "Paris is the capital of France."
