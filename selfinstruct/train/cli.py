"""`python -m selfinstruct train`: LoRA SFT on a generated dataset.

    python -m selfinstruct train --data outputs/run-X/dataset.jsonl --output-dir outputs/sft-X
    python -m selfinstruct train --config sft.toml --max-steps 200 --merge
    python -m selfinstruct train --output-dir outputs/sft-X --resume

Every flag is also a key of the --config TOML file (flags override it). --resume starts from the
settings saved in the output directory (train_config.json); where the job there stopped before its
first checkpoint, it starts afresh with them.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from selfinstruct.errors import UserError
from selfinstruct.train.config import SCHEDULES, check_inputs, load_train_config

log = logging.getLogger(__name__)
S = argparse.SUPPRESS


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="LoRA SFT of a base model on a generated dataset.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, help="TOML file with settings (flags override it).")
    p.add_argument("--data", type=Path, default=S, help="dataset.jsonl, Alpaca JSON array, or chat JSONL.")
    p.add_argument("--output-dir", "-o", type=Path, default=S, help="New folder for the adapter and logs.")
    p.add_argument(
        "--base-model", default=S, help="Model folder or hub id (default: embedded SmolLM2-135M-Instruct)."
    )
    p.add_argument("--method", choices=["lora", "adalora", "qlora"], default=S, help="Adapter kind (lora).")
    p.add_argument(
        "--template", choices=["auto", "plain"], default=S, help="Prompt layout: chat template or plain."
    )
    p.add_argument("--lora-r", type=int, default=S, help="LoRA rank (8).")
    p.add_argument("--lora-alpha", type=float, default=S, help="LoRA alpha (16).")
    p.add_argument("--lora-dropout", type=float, default=S, help="LoRA dropout (0.05).")
    p.add_argument(
        "--target-modules", default=S, help="Comma-separated module names, or all-linear (q_proj,v_proj)."
    )
    p.add_argument("--epochs", type=float, default=S, help="Passes over the data (3).")
    p.add_argument("--max-steps", type=int, default=S, help="Optimizer steps; overrides --epochs.")
    p.add_argument("--learning-rate", "--lr", type=float, default=S, help="Peak learning rate (2e-4).")
    p.add_argument(
        "--lr-scheduler",
        choices=SCHEDULES,
        default=S,
        help="Learning-rate schedule (cosine).",
    )
    p.add_argument("--warmup-ratio", type=float, default=S, help="Share of steps warming up (0.03).")
    p.add_argument("--batch-size", type=int, default=S, help="Sequences per forward pass (4).")
    p.add_argument("--gradient-accumulation", type=int, default=S, help="Forward passes per step (1).")
    p.add_argument("--max-length", type=int, default=S, help="Tokens per sequence (512).")
    p.add_argument("--packing", action=argparse.BooleanOptionalAction, default=S, help="Pack records.")
    p.add_argument("--eval-fraction", type=float, default=S, help="Share held out for eval loss (0).")
    p.add_argument("--eval-steps", type=int, default=S, help="Evaluate every N steps (50).")
    p.add_argument("--save-steps", type=int, default=S, help="Checkpoint every N steps (50).")
    p.add_argument("--save-total-limit", type=int, default=S, help="Checkpoints kept (2).")
    p.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="Recompute activations (CUDA only).",
    )
    p.add_argument("--seed", type=int, default=S, help="Random seed (42).")
    p.add_argument("--rope-scaling", choices=["linear"], default=S, help="Linear position interpolation.")
    p.add_argument("--rope-factor", type=float, default=S, help="Context extension factor, e.g. 2.")
    p.add_argument("--merge", action=argparse.BooleanOptionalAction, default=S, help="Also write merged/.")
    p.add_argument(
        "--resume",
        action="store_true",
        help="Continue from the last checkpoint in --output-dir (afresh if none was saved).",
    )
    p.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    p.set_defaults(func=cmd_train)
    return p


SCHEDULE_FIELDS = ("epochs", "max_steps", "learning_rate", "lr_scheduler", "warmup_ratio")
NOT_SETTINGS = {"config", "resume", "no_progress", "func", "command", "verbose"}


def cmd_train(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in vars(args).items() if k not in NOT_SETTINGS}
    saved = Path(overrides.get("output_dir", "")) / "train_config.json"
    # A resumed job starts from the settings it was started with.
    defaults = json.loads(saved.read_text()) if args.resume and saved.is_file() else None
    cfg = load_train_config(args.config, overrides, defaults)
    changed = [k for k in SCHEDULE_FIELDS if defaults and k in defaults and defaults[k] != getattr(cfg, k)]
    if changed and any(saved.parent.glob("checkpoint-*/trainer_state.json")):
        log.warning(
            "resuming with changed %s: the checkpoint's learning-rate schedule continues as it was planned",
            ", ".join(changed),
        )
    inputs = check_inputs(cfg, args.resume)  # before the slow imports
    try:
        from selfinstruct.train.trainer import train
    except ImportError as exc:
        raise UserError(f"training needs {exc.name or exc}: pip install 'selfinstruct[train]'") from None
    summary = train(cfg, resume=args.resume, progress=not args.no_progress, inputs=inputs)
    print(json.dumps(summary))
    return 0
