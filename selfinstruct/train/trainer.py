"""LoRA SFT on a generated dataset, top to bottom: check inputs, load, train, save, plot, merge.

    python -m selfinstruct train --data outputs/run-X/dataset.jsonl --output-dir outputs/sft-X --max-steps 50

Built on trl's SFTTrainer and peft. Records go in as prompt/completion pairs (conversational when the
tokenizer has a chat template), so trl's completion_only_loss masks the prompt and the loss falls on the
response only. Import this module only to train: it loads torch, transformers, trl and peft.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from matplotlib.figure import Figure
from peft import AdaLoraConfig, LoraConfig, PeftModel
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PrinterCallback,
    ProgressCallback,
    TrainerCallback,
)
from trl import SFTConfig, SFTTrainer

from selfinstruct.errors import UserError
from selfinstruct.tasks import atomic_file
from selfinstruct.train.config import (
    CONFIG_NAME,
    LOG_NAME,
    Inputs,
    TrainConfig,
    check_inputs,
    checkpoint_step,
    claim_output_dir,
)
from selfinstruct.train.data import format_example, split_records

log = logging.getLogger(__name__)

PLOT_NAME = "loss_curve.png"
MERGED_DIR = "merged"


def train(
    cfg: TrainConfig, resume: bool = False, progress: bool = True, inputs: Inputs | None = None
) -> dict[str, Any]:
    """Run one training job, holding the output directory's lock throughout; returns a summary."""
    inputs = inputs or check_inputs(cfg, resume)
    with claim_output_dir(cfg.output_dir, resume) as checkpoint:
        return _train(cfg, inputs, checkpoint, progress)


def _train(cfg: TrainConfig, inputs: Inputs, checkpoint: str | None, progress: bool) -> dict[str, Any]:
    """Load, train, save, plot, merge; returns a summary (steps, seconds, tokens/s, paths)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = load_tokenizer(inputs.base_model)
    chat = cfg.template == "auto" and bool(tokenizer.chat_template)
    examples = [format_example(messages, chat) for messages in inputs.conversations]
    train_rows, eval_rows = split_records(examples, cfg.eval_fraction, cfg.seed)
    model = load_base_model(inputs.base_model, cfg, device, quantize=cfg.method == "qlora")
    log.info(
        "%d training and %d eval records, %s template, base model %s on %s",
        len(train_rows),
        len(eval_rows),
        "chat" if chat else "plain",
        inputs.base_model,
        device,
    )
    resolved = cfg.model_copy(update={"base_model": inputs.base_model})
    (cfg.output_dir / CONFIG_NAME).write_text(json.dumps(resolved.model_dump(mode="json"), indent=2) + "\n")
    trainer = build_trainer(cfg, model, tokenizer, train_rows, eval_rows, device, progress)
    check_lengths(cfg, tokenizer, ((train_rows, trainer.train_dataset), (eval_rows, trainer.eval_dataset)))
    log_path = cfg.output_dir / LOG_NAME
    if checkpoint:
        trim_log(log_path, checkpoint_step(checkpoint))
        log.info("resuming from %s", checkpoint)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - started  # the Trainer evaluates and checkpoints the last step itself
    trainer.save_model(str(cfg.output_dir))  # the adapter (safetensors) and the tokenizer
    plot_loss(log_path, cfg.output_dir / PLOT_NAME)
    summary = _summary(trainer, seconds, cfg.output_dir)
    if cfg.merge:
        del trainer, model
        summary["merged"] = str(merge_adapter(cfg.output_dir))
    return summary


# ---- inputs ---------------------------------------------------------------------------------------


def trim_log(path: Path, last_step: int) -> None:
    """On resume, drop log lines past the checkpoint: those steps run again."""
    if not path.exists():
        return
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    with atomic_file(path) as f:
        f.writelines(json.dumps(r) + "\n" for r in rows if r["step"] <= last_step)


# ---- model ----------------------------------------------------------------------------------------


def load_tokenizer(base: str):
    try:
        return AutoTokenizer.from_pretrained(base)
    except (OSError, ValueError) as exc:
        raise UserError(f"{base}: could not load a tokenizer ({_first_line(exc)})") from None


def load_base_model(base: str, cfg: TrainConfig, device: str, quantize: bool = False):
    """The base model, with linear position interpolation applied to its config when asked."""
    try:
        config = AutoConfig.from_pretrained(base)
    except (OSError, ValueError) as exc:
        raise UserError(f"{base}: could not load the model config ({_first_line(exc)})") from None
    if cfg.rope_scaling == "linear":
        apply_linear_rope(config, cfg.rope_factor)
    kwargs: dict[str, Any] = {"config": config, "dtype": _dtype(device)}
    if quantize:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["device_map"] = {"": 0}
    try:
        return AutoModelForCausalLM.from_pretrained(base, **kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(f"{base}: could not load the model ({_first_line(exc)})") from None


def apply_linear_rope(config, factor: float) -> None:
    """Linear RoPE position interpolation (Chen et al., 2023, arXiv 2306.15595): positions / factor.

    transformers 5 reads `rope_parameters`; the legacy `rope_scaling` spelling drops rope_theta and
    breaks the forward pass. The longer window is ours to declare in max_position_embeddings.
    """
    params = dict(getattr(config, "rope_parameters", None) or {})
    if any(isinstance(v, dict) for v in params.values()):
        raise UserError("--rope-scaling: this model has per-layer RoPE settings, which are not supported")
    theta = params.get("rope_theta", getattr(config, "rope_theta", None))
    if theta is None or not hasattr(config, "max_position_embeddings"):
        raise UserError("--rope-scaling: the base model does not use RoPE positions")
    if params.get("rope_type", "default") != "default":
        log.warning("replacing the model's %s RoPE scaling with linear", params["rope_type"])
    config.rope_parameters = {"rope_type": "linear", "factor": float(factor), "rope_theta": theta}
    config.max_position_embeddings = int(config.max_position_embeddings * factor)


def _dtype(device: str):
    return torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32


def peft_config_for(cfg: TrainConfig, total_steps: int = 1):
    """LoRA (also for QLoRA) or AdaLoRA. AdaLoRA needs the step count: build_trainer sets it."""
    targets = "all-linear" if cfg.target_modules == ["all-linear"] else cfg.target_modules
    common = dict(target_modules=targets, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout)
    common["task_type"] = "CAUSAL_LM"
    if cfg.method == "adalora":
        init_r = cfg.lora_r + cfg.lora_r // 2
        return AdaLoraConfig(init_r=init_r, target_r=cfg.lora_r, total_step=total_steps, **common)
    return LoraConfig(r=cfg.lora_r, **common)


# ---- trainer --------------------------------------------------------------------------------------


def build_trainer(cfg, model, tokenizer, train_rows, eval_rows, device: str, progress: bool = True):
    cpu = device == "cpu"
    args = SFTConfig(
        output_dir=str(cfg.output_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a share of the steps
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation,
        max_length=cfg.max_length,
        packing=cfg.packing,
        completion_only_loss=True,
        eval_strategy="steps" if eval_rows else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=1,
        report_to="none",
        # Packed batches carry no padding (and no attention mask to tell it by).
        include_num_input_tokens_seen="all" if cfg.packing else "non_padding",
        use_cpu=cpu,
        bf16=not cpu and _dtype(device) == torch.bfloat16,
        gradient_checkpointing=cfg.gradient_checkpointing and not cpu,
        seed=cfg.seed,
        disable_tqdm=not progress,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=peft_config_for(cfg),
        callbacks=[JsonlLogCallback(cfg.output_dir / LOG_NAME)],
    )
    # A bar with the latest loss instead of a printed dict per step (the per-step log is the JSONL file).
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    if progress:
        trainer.add_callback(LossProgressCallback())
    if cfg.method == "adalora":
        _schedule_adalora(trainer.model, planned_steps(trainer))
        trainer.add_callback(AdaLoraCallback())
    return trainer


def check_lengths(cfg: TrainConfig, tokenizer, splits) -> None:
    """Records trl left out for their length: some is a warning, all of a split a UserError.

    Without packing, trl cuts records at max_length and drops those whose prompt alone fills it (no
    response token left to learn from). Packing cuts and never drops, and its rows are not records.
    """
    if cfg.packing:
        return
    for (rows, prepared), which in zip(splits, ("training", "held-out"), strict=True):
        if not rows or len(prepared) == len(rows):
            continue
        if len(prepared):
            log.warning(
                "%d of %d %s records left out: their prompt alone is longer than --max-length %d",
                len(rows) - len(prepared),
                len(rows),
                which,
                cfg.max_length,
            )
            continue
        lengths = sorted(record_length(tokenizer, row) for row in rows)
        span = f"{lengths[0]}" if lengths[0] == lengths[-1] else f"{lengths[0]} to {lengths[-1]}"
        raise UserError(
            f"{cfg.data}: all {len(rows)} {which} records are longer than --max-length {cfg.max_length} "
            f"({span} tokens, the prompt alone filling it) — raise --max-length to {lengths[-1]} "
            "or shorten the records"
        )


def record_length(tokenizer, row: dict[str, Any]) -> int:
    """Tokens of one prompt/completion record as trl tokenizes it (chat template, or text plus EOS)."""
    if isinstance(row["prompt"], list):
        ids = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True)
        return len(ids["input_ids"] if hasattr(ids, "keys") else ids)
    return len(tokenizer(row["prompt"] + row["completion"] + tokenizer.eos_token)["input_ids"])


def planned_steps(trainer) -> int:
    """Optimizer steps the Trainer will run, counted the way it counts them."""
    args = trainer.args
    if args.max_steps > 0:
        return args.max_steps
    batches = len(trainer.get_train_dataloader())
    per_epoch = max(math.ceil(batches / args.gradient_accumulation_steps), 1)
    return math.ceil(args.num_train_epochs * per_epoch)


def _schedule_adalora(model, total_steps: int) -> None:
    """AdaLoRA's budget schedule: 10% warm-up at the initial rank, ranks fixed for the last 20%."""
    config = model.peft_config["default"]
    config.total_step = total_steps
    config.tinit = total_steps // 10
    config.tfinal = total_steps // 5
    config.deltaT = max(1, total_steps // 50)


def _summary(trainer, seconds: float, out: Path) -> dict[str, Any]:
    """Throughput of the steps this call ran, training time only (no evaluation, no checkpoints)."""
    timing = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, JsonlLogCallback))
    return {
        "steps": trainer.state.global_step,
        "steps_run": timing.steps,
        "seconds": round(seconds, 2),
        "seconds_per_step": round(timing.seconds / timing.steps, 3) if timing.steps else None,
        "tokens_per_second": round(timing.tokens / timing.seconds, 1) if timing.seconds else None,
        "output_dir": str(out),
    }


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# ---- callbacks --------------------------------------------------------------------------------------


class JsonlLogCallback(TrainerCallback):
    """One JSON line per optimizer step (loss, learning rate, tokens/s, epoch) and per evaluation."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._clock: tuple[float, int] | None = None
        self.steps, self.tokens, self.seconds = 0, 0, 0.0  # totals over the logged steps

    def _restart_clock(self, state) -> None:
        self._clock = (time.perf_counter(), state.num_input_tokens_seen)

    def on_train_begin(self, args, state, control, **kwargs):
        self._restart_clock(state)

    def on_evaluate(self, args, state, control, **kwargs):
        self._restart_clock(state)  # evaluation time is not training throughput

    def on_save(self, args, state, control, **kwargs):
        self._restart_clock(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        epoch = round(state.epoch or 0.0, 4)
        if "loss" in logs and self._clock is not None:
            then, tokens_then = self._clock
            elapsed = max(time.perf_counter() - then, 1e-9)
            tokens = state.num_input_tokens_seen - tokens_then
            self.steps += 1
            self.tokens += tokens
            self.seconds += elapsed
            record = {
                "step": state.global_step,
                "loss": logs["loss"],
                "learning_rate": logs.get("learning_rate"),
                "tokens_per_second": round(tokens / elapsed, 1),
                "seconds": round(elapsed, 3),
                "epoch": epoch,
            }
            self._restart_clock(state)
        elif "eval_loss" in logs:
            record = {"step": state.global_step, "eval_loss": logs["eval_loss"], "epoch": epoch}
        else:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


class LossProgressCallback(TrainerCallback):
    """The Trainer's progress bar, with the latest loss beside it instead of a printed dict per step."""

    def __init__(self):
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs:
            shown = {k: f"{logs[k]:.4g}" for k in ("loss", "eval_loss") if k in logs}
            if shown:
                self.bar.set_postfix(shown, refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class AdaLoraCallback(TrainerCallback):
    """AdaLoRA re-allocates ranks from the gradients after each optimizer step, before zero_grad."""

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        model.base_model.update_and_allocate(state.global_step)


# ---- outputs ----------------------------------------------------------------------------------------


def plot_loss(log_path: Path, png_path: Path) -> None:
    """Training (and eval) loss against the step, as a PNG (matplotlib's Agg canvas, no display)."""
    rows = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", linewidth=1)
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)


def load_trained(output_dir: Path, device: str = "cpu"):
    """The base model of a finished job (with its RoPE settings) and the adapter on top, plus tokenizer."""
    cfg = TrainConfig.model_validate_json((Path(output_dir) / CONFIG_NAME).read_text())
    base = load_base_model(cfg.base_model, cfg, device)
    return PeftModel.from_pretrained(base, str(output_dir)), load_tokenizer(str(output_dir))


def merge_adapter(output_dir: Path) -> Path:
    """Write merged/: the full-precision base model with the adapter folded in (QLoRA included)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_trained(output_dir, device)
    merged = model.merge_and_unload()
    target = Path(output_dir) / MERGED_DIR
    merged.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    log.info("merged model in %s", target)
    return target
