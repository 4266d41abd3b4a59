"""Settings of `selfinstruct train`: one pydantic model, read from TOML, overridden by CLI flags."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from selfinstruct.config import read_toml
from selfinstruct.errors import UserError
from selfinstruct.locking import LOCK_NAME, exclusive
from selfinstruct.train.data import Message, load_conversations

log = logging.getLogger(__name__)

LOG_NAME = "train_log.jsonl"
CONFIG_NAME = "train_config.json"
# What a job leaves in its output directory before its first checkpoint: files, and the Trainer's folders.
UNSAVED_FILES = {CONFIG_NAME, LOG_NAME, LOCK_NAME}
UNSAVED_DIRS = {"runs"}

Schedule = Literal[
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"
]
SCHEDULES = list(Schedule.__args__)


class TrainConfig(BaseModel):
    """LoRA SFT on a dataset.jsonl (or Alpaca JSON, or chat `messages` JSONL)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    data: Path = Field(description="Training data: dataset.jsonl, Alpaca JSON array, or chat messages JSONL.")
    output_dir: Path = Field(description="Where the adapter, tokenizer, log, plot and checkpoints go.")
    base_model: str | None = Field(
        None, description="Base model folder or hub id (default: the embedded SmolLM2-135M-Instruct)."
    )
    method: Literal["lora", "adalora", "qlora"] = Field(
        "lora", description="lora; adalora (adaptive ranks); qlora (4-bit base, needs CUDA and bitsandbytes)."
    )
    template: Literal["auto", "plain"] = Field(
        "auto", description="auto: the tokenizer's chat template when it has one; plain: Alpaca-style text."
    )
    lora_r: int = Field(8, ge=1, description="LoRA rank (AdaLoRA: the target average rank).")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        min_length=1,
        description="Module names that get adapters, or ['all-linear'].",
    )
    epochs: float = Field(3.0, gt=0, description="Passes over the training split (ignored with max_steps).")
    max_steps: int | None = Field(None, gt=0, description="Optimizer steps to run; overrides epochs.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate (AdamW).")
    lr_scheduler: Schedule = Field("cosine", description="Learning-rate schedule after warm-up.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of the steps spent warming up.")
    batch_size: int = Field(4, ge=1, description="Sequences per device per forward pass.")
    gradient_accumulation: int = Field(1, ge=1, description="Forward passes per optimizer step.")
    max_length: int = Field(512, ge=8, description="Tokens per sequence; longer ones are cut at the end.")
    packing: bool = Field(False, description="Pack several records into each max_length sequence.")
    eval_fraction: float = Field(
        0.0, ge=0, lt=1, description="Share of the records held out for eval loss (0: no evaluation)."
    )
    eval_steps: int = Field(50, ge=1, description="Evaluate every this many steps (and once at the end).")
    save_steps: int = Field(50, ge=1, description="Checkpoint every this many steps, for --resume.")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept in the output directory.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations to save memory (CUDA only; ignored on the CPU)."
    )
    seed: int = Field(42, description="Seed for the adapter initialization, data order and eval split.")
    rope_scaling: Literal["linear"] | None = Field(
        None, description="Position interpolation: 'linear' divides positions by rope_factor."
    )
    rope_factor: float | None = Field(
        None, gt=1, description="Context extension factor for rope_scaling (max positions grow by it)."
    )
    merge: bool = Field(False, description="Also write merged/: the base model with the adapter merged in.")

    @field_validator("target_modules", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @model_validator(mode="after")
    def _rope_pair(self) -> TrainConfig:
        if (self.rope_scaling is None) != (self.rope_factor is None):
            raise ValueError("--rope-scaling and --rope-factor (rope_scaling, rope_factor) go together")
        return self


# CLI flag (argparse dest) -> TrainConfig field; every field has its flag.
FLAG_FOR_FIELD = {name: "--" + name.replace("_", "-") for name in TrainConfig.model_fields}


def load_train_config(
    path: Path | None, overrides: dict[str, Any], defaults: dict[str, Any] | None = None
) -> TrainConfig:
    """Merge defaults, a TOML file and CLI overrides, in that order, and validate them in one place.

    Errors name the flag or the file key the bad value came from.
    """
    data = dict(defaults or {})
    if path is not None:
        data.update(read_toml(path))
    data.update(overrides)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise UserError(_describe(exc, path, overrides)) from None


def _describe(exc: ValidationError, path: Path | None, overrides: dict[str, Any]) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) if err["loc"] else ""
        field = key.split(".")[0]
        if not field:
            parts.append(err["msg"].removeprefix("Value error, "))
            continue
        if field in overrides:
            where = FLAG_FOR_FIELD.get(field, field)
        else:
            where = f"{path or 'config'}: {key}"
        if err["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown setting — see `python -m selfinstruct train --help`")
        elif err["type"] == "missing":
            parts.append(f"{FLAG_FOR_FIELD.get(field, field)} is required (or `{field}` in --config)")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"{where}: {msg} (got {err['input']!r})")
    return "; ".join(parts)


@dataclass
class Inputs:
    """What check_inputs found: the records and the base model to load."""

    conversations: list[list[Message]]
    base_model: str


def check_inputs(cfg: TrainConfig, resume: bool) -> Inputs:
    """Every input a user can get wrong, checked before anything slow is imported or loaded.

    The output directory is checked here too, so a used one fails fast; `claim_output_dir` checks it
    again under the lock for the job.
    """
    conversations = load_conversations(cfg.data)
    base = resolve_base_model(cfg.base_model)
    check_output_dir(cfg.output_dir, resume)
    if (cfg.output_dir / LOCK_NAME).is_file():
        with exclusive(cfg.output_dir, "train"):  # one that another job holds fails fast too
            pass
    if cfg.method == "qlora":
        check_qlora()
    return Inputs(conversations, base)


def resolve_base_model(name: str | None) -> str:
    """A local model folder, a hub id, or (None) the embedded model's cached folder."""
    if name is None:
        from selfinstruct.generation.embedded import prepare_embedded_model

        return str(prepare_embedded_model())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"{path}: not a model folder (no config.json) — pass a Hugging Face model folder")
        return str(path)
    # 'org/name' may be a hub id; anything else shaped like a path must exist.
    if name.startswith(("/", ".", "~")) or name.endswith("/") or name.count("/") > 1:
        raise UserError(f"{name}: base model folder does not exist — check --base-model")
    return name


def check_output_dir(out: Path, resume: bool) -> str | None:
    """Refuse to mix two jobs in one folder; with resume, return the last checkpoint in it (or None).

    A folder holding only what a job leaves before its first checkpoint (its settings, log, lock and
    the Trainer's runs/) is a job that never saved anything: it starts afresh, with or without --resume.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: output directory is a file — pick a new --output-dir")
    if resume:
        checkpoints = sorted(
            (p for p in out.glob("checkpoint-*") if (p / "trainer_state.json").is_file()), key=checkpoint_step
        )
        if checkpoints:
            return str(checkpoints[-1])
        if not out.is_dir() or not holds_unsaved_job(out):
            raise UserError(f"{out}: no checkpoint to resume from — run without --resume to start afresh")
    elif out.is_dir() and not holds_unsaved_job(out):
        raise UserError(f"{out}: output directory is not empty — pick a new --output-dir, or --resume it")
    return None


def holds_unsaved_job(out: Path) -> bool:
    """True when the folder is empty or holds only what a job leaves before its first checkpoint."""
    return all(
        (p.name in UNSAVED_FILES and p.is_file()) or (p.name in UNSAVED_DIRS and p.is_dir())
        for p in out.iterdir()
    )


@contextmanager
def claim_output_dir(out: Path, resume: bool) -> Iterator[str | None]:
    """Create and lock the output directory for the job; yield the checkpoint to resume, or None.

    A job that starts afresh where an earlier one saved nothing drops that job's log first, so the
    two logs are not mixed (its settings file is rewritten by the new job).
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"{out}: cannot create the output directory ({exc.strerror}) — pick a new --output-dir"
        ) from None
    with exclusive(out, "train"):
        checkpoint = check_output_dir(out, resume)
        if checkpoint is None:
            stale = (out / LOG_NAME).is_file() or (out / CONFIG_NAME).is_file()
            if resume:
                log.warning("%s: no checkpoint was saved there yet — starting afresh", out)
            elif stale:
                log.info("%s: the job there saved no checkpoint — starting afresh", out)
            (out / LOG_NAME).unlink(missing_ok=True)
        yield checkpoint


def checkpoint_step(checkpoint: str | Path) -> int:
    return int(Path(checkpoint).name.rsplit("-", 1)[-1])


def check_qlora() -> None:
    """QLoRA loads the base model in 4 bits with bitsandbytes: a CUDA feature (~100 s/step on a CPU)."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError("--method qlora needs bitsandbytes and a CUDA GPU: pip install bitsandbytes")
    import torch

    if not torch.cuda.is_available():
        raise UserError("--method qlora needs a CUDA GPU (4-bit bitsandbytes); use --method lora here")
