"""`python -m selfinstruct <command>`: run, score, seeds, dedup, train, report, export, models."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from selfinstruct import __version__, interrupts
from selfinstruct.config import RunConfig, ScoreConfig
from selfinstruct.errors import UserError
from selfinstruct.flags import add_config_flags, given_settings

log = logging.getLogger("selfinstruct")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m selfinstruct", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="Log debug messages.")
    parser.add_argument("--version", action="version", version=f"selfinstruct {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="Generate an instruction dataset from seed tasks.")
    run.add_argument("--config", type=Path, help="TOML file with settings (flags override it).")
    add_config_flags(run, RunConfig, "--config")
    run.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="Print the requests, tokens and cost (with prices) the run would take, per stage, and exit; "
        "nothing is sent or written. On an existing run directory: the rest of it, from its own averages.",
    )
    run.add_argument(
        "--allow-changed-settings",
        action="store_true",
        help="Resume a run directory even though settings that shape the data differ.",
    )
    run.set_defaults(func=cmd_run)

    score = commands.add_parser(
        "score",
        help="Rate every record of an instruction file 1-5 with the run's LLM judge.",
        description="Reads a run's dataset.jsonl, Alpaca JSON/JSONL, seed tasks or chat messages; writes "
        "OUTPUT as JSONL with score and score_reason on each record, in input order. The judge's answers "
        "are cached in OUTPUT.responses.jsonl: the same command again resumes a stopped score without "
        "paying any request twice. See docs/judge.md.",
    )
    score.add_argument("input", type=Path, help="Run directory, or Alpaca / dataset / seed / chat JSON(L).")
    score.add_argument("-o", "--output", type=Path, required=True, help="JSONL file to write.")
    score.add_argument("--config", type=Path, help="TOML file with settings (flags override it).")
    add_config_flags(score, ScoreConfig, "--config")
    score.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    score.add_argument(
        "--overwrite", action="store_true", help="Replace OUTPUT and its cache, and score from nothing."
    )
    score.set_defaults(func=cmd_score)

    seeds = commands.add_parser("seeds", help="Work with seed task files.")
    seeds_cmds = seeds.add_subparsers(dest="seeds_command", required=True)
    check = seeds_cmds.add_parser("check", help="Validate a seed file and print a summary table.")
    check.add_argument("path", type=Path, help="Seed JSONL (Self-Instruct format) or Alpaca JSON/JSONL.")
    check.add_argument(
        "--threshold", type=float, default=0.7, help="ROUGE-L above which two seeds are near-duplicates."
    )
    check.add_argument("--tokenizer", choices=["auto", "rouge", "unicode"], default="auto")
    check.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    check.set_defaults(func=cmd_seeds_check)

    from selfinstruct.train.cli import add_train_parser  # light: the trainer itself loads on use

    add_train_parser(commands)

    dedup = commands.add_parser(
        "dedup", help="Drop near-duplicate instructions (ROUGE-L) from a JSONL, JSON or text file."
    )
    dedup.add_argument("input", type=Path, help="JSONL, JSON array, or one instruction per line.")
    dedup.add_argument("-o", "--output", type=Path, required=True, help="Kept records, in the input's form.")
    dedup.add_argument("--field", default="instruction", help="Key of the instruction in each record.")
    dedup.add_argument("--threshold", type=float, default=0.7, help="Drop when ROUGE-L F is above this.")
    dedup.add_argument("--against", type=Path, help="Seed tasks every record is also compared against.")
    dedup.add_argument("--rejected", type=Path, help="Write dropped records here, with their closest match.")
    dedup.add_argument("--tokenizer", choices=["auto", "rouge", "unicode"], default="auto")
    dedup.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    dedup.set_defaults(func=cmd_dedup)

    report = commands.add_parser(
        "report", help="The paper's Table 1 and figures for a run directory or an instruction file."
    )
    report.add_argument("path", type=Path, help="Run directory, or Alpaca / dataset / seed / chat JSON(L).")
    report.add_argument(
        "-o", "--output-dir", type=Path, help="Where to write (default: RUN/report or FILE_STEM-report)."
    )
    report.add_argument(
        "--seeds", type=Path, help="Seed tasks for ROUGE-L to the nearest seed (default: the run's seeds, "
        "else the project's seeds in the data's language).",
    )  # fmt: skip
    report.add_argument("--sample", type=int, default=50, help="Records in the review sample (default 50).")
    report.add_argument("--seed", type=int, default=0, help="Seed for drawing the review sample (default 0).")
    report.add_argument(
        "--overwrite", action="store_true", help="Replace an earlier report in the directory."
    )
    report.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    report.set_defaults(func=cmd_report)

    add_export_parser(commands)

    models = commands.add_parser("models", help="Manage the embedded default model.")
    models_cmds = models.add_subparsers(dest="models_command", required=True)
    prepare = models_cmds.add_parser("prepare", help="Download and convert the embedded model once.")
    prepare.add_argument("--force", action="store_true", help="Rebuild even when cached.")
    prepare.set_defaults(func=cmd_models_prepare)
    path = models_cmds.add_parser("path", help="Print the embedded model's cache folder.")
    path.set_defaults(func=cmd_models_path)
    return parser


def add_export_parser(commands) -> None:
    from selfinstruct.export import DEFAULT_LICENSE, DEFAULT_SEED, DEFAULT_VAL_FRACTION, FORMATS

    export = commands.add_parser(
        "export",
        help="Write a run's data (or an instruction file) for trainers, or as a Hugging Face dataset.",
        description="Formats: alpaca (JSON array of instruction/input/output), messages (chat JSONL for "
        "trl), openai (OpenAI chat fine-tuning JSONL), sharegpt (LLaMA-Factory JSON array), parquet (one "
        "table), hf (a folder with train/validation parquet splits and a README.md dataset card, ready for "
        "`hf upload USER/NAME DIR --repo-type dataset`). See docs/export.md.",
    )
    export.add_argument("path", type=Path, help="Run directory, or Alpaca / dataset / seed / chat JSON(L).")
    export.add_argument("--format", "-f", required=True, choices=FORMATS, help="Output format.")
    export.add_argument("-o", "--output", type=Path, required=True, help="File to write (a folder for hf).")
    export.add_argument(
        "--val-fraction",
        type=float,
        help=f"hf: share of records held out as the validation split, whole tasks at a time "
        f"(default {DEFAULT_VAL_FRACTION}; 0: train only).",
    )
    export.add_argument(
        "--seed", type=int, help=f"hf: seed for drawing the validation tasks (default {DEFAULT_SEED})."
    )
    export.add_argument(
        "--license", help=f"hf: license id for the card, e.g. apache-2.0 (default {DEFAULT_LICENSE})."
    )
    export.add_argument("--system", help="messages, openai, sharegpt: a system message before each record.")
    export.add_argument("--overwrite", action="store_true", help="Replace an output that exists.")
    export.set_defaults(func=cmd_export)
    _one_line_errors(export)


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Usage errors (an unknown --format, a missing -o) as one line, like the command's other errors."""

    def error(message: str):
        parser.exit(2, f"error: {message} — see `{parser.prog} --help`\n")

    parser.error = error


def cmd_run(args: argparse.Namespace) -> int:
    from selfinstruct.runner import run

    overrides, flag_names = given_settings(args)
    return run(
        args.config,
        overrides,
        flag_names,
        progress=not args.no_progress,
        allow_changed_settings=args.allow_changed_settings,
        dry_run=args.dry_run,
    )


def cmd_score(args: argparse.Namespace) -> int:
    from selfinstruct.score import score

    overrides, flag_names = given_settings(args)
    return score(
        args.input, args.output, args.config, overrides, flag_names,
        progress=not args.no_progress, overwrite=args.overwrite,
    )  # fmt: skip


def cmd_dedup(args: argparse.Namespace) -> int:
    from selfinstruct.dedup import dedup

    r = dedup(
        args.input, args.output, args.field, args.threshold, args.against, args.rejected,
        args.tokenizer, progress=not args.no_progress,
    )  # fmt: skip
    print(
        f"kept {r.kept} of {r.read} ({r.dropped} near-duplicates dropped, {r.tokenizer} tokens) "
        f"-> {args.output}"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from selfinstruct.report import build_report

    r = build_report(
        args.path, args.output_dir, args.seeds, args.sample, args.seed, args.overwrite,
        progress=not args.no_progress,
    )  # fmt: skip
    t = r.report
    clf = t["classification_instructions"]
    kinds = "classification not recorded" if clf is None else f"{clf:,} classification"
    print(
        f"{t['instructions']:,} instructions ({kinds}), "
        f"{t['instances']:,} instances ({t['empty_input_instances']:,} with empty input); average words: "
        f"instruction {t['avg_words']['instruction']}, input {t['avg_words']['input_nonempty']}, "
        f"output {t['avg_words']['output']}"
    )
    print(f"report -> {r.out_dir / 'report.html'} ({r.seconds:.1f} s)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from selfinstruct.export import export, summary

    result = export(
        args.path, args.format, args.output, val_fraction=args.val_fraction, seed=args.seed,
        license=args.license, system=args.system, overwrite=args.overwrite,
    )  # fmt: skip
    print(summary(result))
    return 0


def cmd_seeds_check(args: argparse.Namespace) -> int:
    import json

    from selfinstruct.seedcheck import check_seeds, format_summary

    if not 0 < args.threshold <= 1:
        raise UserError(f"--threshold: {args.threshold} is outside (0, 1] — pass e.g. 0.7")
    summary = check_seeds(args.path, args.threshold, args.tokenizer)
    print(
        json.dumps(summary.to_dict(), ensure_ascii=False, indent=2) if args.json else format_summary(summary)
    )
    return 2 if summary.problems else 0


def cmd_models_prepare(args: argparse.Namespace) -> int:
    from selfinstruct.generation.embedded import prepare_embedded_model

    print(prepare_embedded_model(force=args.force))
    return 0


def cmd_models_path(args: argparse.Namespace) -> int:
    from selfinstruct.generation.embedded import embedded_model_dir, is_prepared

    path = embedded_model_dir()
    print(path if is_prepared(path) else f"{path} (not prepared: python -m selfinstruct models prepare)")
    return 0


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    for name in ("httpx", "httpx2", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)
    interrupts.install()  # SIGINT, SIGTERM, SIGHUP: one clean way to stop (see interrupts.py)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past a file-size limit a write fails (EFBIG)
    try:
        with interrupts.armed():
            code = args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except (interrupts.Interrupted, KeyboardInterrupt) as exc:
        stop = exc if isinstance(exc, interrupts.Interrupted) else interrupts.Interrupted(signal.SIGINT)
        print(f"interrupted ({stop.name}): records written so far are kept", file=sys.stderr)
        code = stop.exit_code
    interrupts.ignore()
    sys.exit(code)
