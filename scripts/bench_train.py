"""Training speed: `selfinstruct train` against a bare trl SFTTrainer script, same data, model and settings.

One process runs (a) `selfinstruct.train.trainer.train`, the function `python -m selfinstruct train`
calls, and (b) a minimal trl script written here (peft LoraConfig + SFTConfig + SFTTrainer, nothing of
selfinstruct's), each in a thread, taking turns step by step (a baton passed at the end of each
optimizer step; the arm that steps first alternates between runs), so that other work on a shared
machine slows both alike. Both train with LoRA r=8, alpha 16, dropout 0.05 on q_proj/v_proj, max
length 512, batch 4, lr 2e-4 cosine with 3% warm-up, seed 42, conversational prompt/completion records
with completion-only loss, no packing (padded batches), no gradient checkpointing (SFTConfig turns it
on by default; the bare script turns it off to match), fp32 on the CPU (bf16 on a GPU that has it).

Each arm trains --steps optimizer steps after one warm-up step that is not timed. An arm's time is the
time it holds the baton, from the end of one step to the end of the next (so its per-step logging,
callbacks and data loading count); its tokens are the non-padding tokens (attention mask) of the
batches of those steps. Reported: each arm's median tokens/s over --repeats runs and the median of the
runs' ratios ours/trl; the same per CPU-second of the process; and each arm's time per step outside
the training step (the log of the last step, callbacks, fetching the next batch).

Data: a dataset.jsonl (--data), or the first 256 records of ../shared/data/alpaca_data_52k.json
written as one (instruction/input/output, the dataset.jsonl layout), or, without it, the instances
of seeds/en.jsonl.

    .venv/bin/python scripts/bench_train.py                         # CPU, 8 timed steps per arm, 3 runs
    .venv/bin/python scripts/bench_train.py --steps 20 --repeats 5
    .venv/bin/python scripts/bench_train.py --device cuda --steps 50 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALPACA = ROOT.parent / "shared" / "data" / "alpaca_data_52k.json"
SEEDS = ROOT / "seeds" / "en.jsonl"
RECORDS = 256

# The settings both arms train with (selfinstruct train's defaults, spelled out).
LORA = {"r": 8, "alpha": 16.0, "dropout": 0.05, "targets": ["q_proj", "v_proj"]}
SETTINGS = {"max_length": 512, "batch_size": 4, "learning_rate": 2e-4, "warmup": 0.03, "seed": 42}


def write_dataset(path: Path) -> str:
    """A dataset.jsonl from Alpaca records (or the seed instances); returns where they came from."""
    if ALPACA.is_file():
        rows, source = json.loads(ALPACA.read_text())[:RECORDS], f"first {RECORDS} records of {ALPACA.name}"
    else:
        tasks = [json.loads(line) for line in SEEDS.read_text().splitlines() if line.strip()]
        rows = [{"instruction": t["instruction"], **i} for t in tasks for i in t["instances"]]
        source = f"the {len(rows)} instances of {SEEDS.relative_to(ROOT)}"
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(
            json.dumps({"instruction": r["instruction"], "input": r.get("input", ""), "output": r["output"]})
            + "\n"
            for r in rows
        )
    return source


class Baton:
    """One arm at a time: the holder runs one optimizer step, then hands the machine to the next arm.

    Both arms train in threads of this process, step by step in turn, so that what else runs on the
    machine slows both alike. An arm holds the baton from its start (loading a model is not
    thread-safe) to the end of its first step; after their last steps, the arms finish (save) one at a
    time, holding `after`. An arm that finished its last step (or failed) is skipped.
    """

    def __init__(self, arms: list[str]):
        self.after = threading.Lock()
        self._cond = threading.Condition()
        self._order = list(arms)
        self._turn = 0
        self._active = set(arms)

    def take(self, arm: str) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._order[self._turn] == arm)

    def hand_over(self, arm: str, last: bool = False) -> None:
        with self._cond:
            if last:
                self._active.discard(arm)
            self._advance()

    def leave(self, arm: str) -> None:
        with self._cond:
            self._active.discard(arm)
            if self._order[self._turn] == arm:
                self._advance()

    def wait_all_done(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: not self._active)

    def _advance(self) -> None:
        for _ in self._order:
            self._turn = (self._turn + 1) % len(self._order)
            if self._order[self._turn] in self._active:
                break
        self._cond.notify_all()


class Meter:
    """One arm's clock: times the steps after the first while the arm holds the baton, and sums the
    non-padding tokens (attention mask) of their batches."""

    def __init__(self, arm: str, baton: Baton):
        self.arm, self.baton = arm, baton
        self.tokens = 0  # a device tensor once counting starts: no sync per batch
        self.tokens_at_start = self.tokens_at_end = 0
        self.held_since: tuple[float, float] | None = None  # (wall, process CPU) seconds
        self.seconds = self.cpu_seconds = 0.0
        self.between = 0.0  # of self.seconds, outside the steps: logging, callbacks, the next batch
        self.steps = 0
        self.holds_after = False

    def attach(self, trainer):
        """Count the tokens of each batch the trainer steps on, and add the clock to its callbacks."""
        from transformers import TrainerCallback

        meter, step = self, trainer.training_step

        def counted_step(model, inputs, *args, **kwargs):
            mask = inputs.get("attention_mask")
            meter.tokens = meter.tokens + (mask.sum() if mask is not None else inputs["input_ids"].numel())
            return step(model, inputs, *args, **kwargs)

        class Clock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                if meter.held_since is None:  # the first step: the arm holds the baton since its start
                    meter.held_since = _clocks()
                elif state.global_step > 1:
                    meter.between += time.perf_counter() - meter.held_since[0]

            def on_step_end(self, args, state, control, **kwargs):
                meter.step_done(state.global_step, state.max_steps)

        trainer.training_step = counted_step
        trainer.add_callback(Clock())
        return trainer

    def step_done(self, step: int, last: int) -> None:
        _sync()
        wall, cpu = _clocks()
        if step == 1:
            self.tokens_at_start = int(self.tokens)
        else:
            self.seconds += wall - self.held_since[0]
            self.cpu_seconds += cpu - self.held_since[1]
        if step < last:
            self.baton.hand_over(self.arm)
            self.baton.take(self.arm)
            self.held_since = _clocks()
            return
        self.tokens_at_end, self.steps = int(self.tokens), step - 1
        self.baton.hand_over(self.arm, last=True)
        self.baton.wait_all_done()  # saving the adapter is not to slow the other arm's last step
        self.baton.after.acquire()
        self.holds_after = True

    def result(self) -> dict:
        tokens = self.tokens_at_end - self.tokens_at_start
        return {
            "steps": self.steps,
            "tokens": tokens,
            "seconds": self.seconds,
            "tokens_per_s": tokens / self.seconds,
            "tokens_per_cpu_s": tokens / self.cpu_seconds,
            "ms_between_steps": 1000 * self.between / self.steps,
        }


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_ours(data: Path, model_dir: str, out: Path, steps: int, meter: Meter) -> dict:
    """`python -m selfinstruct train`'s code path: train(cfg), with the meter on the trainer it builds."""
    import selfinstruct.train.trainer as ours
    from selfinstruct.train.config import load_train_config

    cfg = load_train_config(
        None,
        {
            "data": data,
            "output_dir": out,
            "base_model": model_dir,
            "max_steps": steps + 1,
            "lora_r": LORA["r"],
            "lora_alpha": LORA["alpha"],
            "lora_dropout": LORA["dropout"],
            "target_modules": LORA["targets"],
            "max_length": SETTINGS["max_length"],
            "batch_size": SETTINGS["batch_size"],
            "learning_rate": SETTINGS["learning_rate"],
            "lr_scheduler": "cosine",
            "warmup_ratio": SETTINGS["warmup"],
            "seed": SETTINGS["seed"],
        },
    )
    build = ours.build_trainer
    ours.build_trainer = lambda *a, **k: meter.attach(build(*a, **k))
    try:
        ours.train(cfg, progress=False)
    finally:
        ours.build_trainer = build
    return meter.result()


def run_trl(data: Path, model_dir: str, out: Path, steps: int, meter: Meter) -> dict:
    """A bare trl SFT script: conversational prompt/completion, LoRA, completion-only loss."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    records = [
        {
            "prompt": [{"role": "user", "content": user_turn(r)}],
            "completion": [{"role": "assistant", "content": r["output"]}],
        }
        for r in rows
    ]
    cpu = not torch.cuda.is_available()
    bf16 = not cpu and torch.cuda.is_bf16_supported()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if bf16 else torch.float32)
    args = SFTConfig(
        output_dir=str(out),
        max_steps=steps + 1,
        per_device_train_batch_size=SETTINGS["batch_size"],
        learning_rate=SETTINGS["learning_rate"],
        lr_scheduler_type="cosine",
        warmup_steps=SETTINGS["warmup"],
        max_length=SETTINGS["max_length"],
        packing=False,
        completion_only_loss=True,
        gradient_checkpointing=False,  # SFTConfig's default is True; ours is off
        use_cpu=cpu,
        bf16=bf16,
        seed=SETTINGS["seed"],
        report_to="none",
        disable_tqdm=True,
    )
    lora = LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules=LORA["targets"],
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(records),
        processing_class=tokenizer,
        peft_config=lora,
    )
    meter.attach(trainer).train()
    return meter.result()


def user_turn(record: dict) -> str:
    """The instruction, and the input after a blank line when there is one (as selfinstruct does)."""
    extra = record.get("input") or ""
    return f"{record['instruction']}\n\n{extra}" if extra.strip() else record["instruction"]


ARMS = {"selfinstruct": run_ours, "trl": run_trl}


def run_pair(order: list[str], data: Path, model_dir: str, folder: Path, steps: int) -> dict[str, dict]:
    """Both arms at once, each in a thread, their steps taking turns; returns each arm's figures."""
    baton, results, errors = Baton(order), {}, []

    def work(arm: str) -> None:
        meter = Meter(arm, baton)
        baton.take(arm)
        try:
            results[arm] = ARMS[arm](data, model_dir, folder / arm, steps, meter)
        except BaseException as exc:
            errors.append(exc)
        finally:
            baton.leave(arm)
            if meter.holds_after:
                baton.after.release()

    threads = [threading.Thread(target=work, args=(arm,), name=arm) for arm in order]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=8, help="Timed optimizer steps per run (8).")
    parser.add_argument(
        "--repeats", type=int, default=3, help="Runs of both arms, the first to step alternating (3)."
    )
    parser.add_argument("--model", help="Model folder (default: the embedded SmolLM2-135M-Instruct).")
    parser.add_argument("--data", type=Path, help="A dataset.jsonl (default: written from Alpaca or seeds).")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cpu (default) or cuda.")
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported: both arms see no GPU
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA GPU here — run with --device cpu")
    import datasets
    from transformers.utils import logging as hf_logging

    # Both arms' imports (transformers, trl, peft) here, before the threads: lazy imports in threads race.
    import selfinstruct.train.trainer  # noqa: F401

    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args.model is None:
        from selfinstruct.generation.embedded import prepare_embedded_model

        args.model = str(prepare_embedded_model())
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "dataset.jsonl"
            print(f"data: {write_dataset(data)}")
        where = (
            torch.cuda.get_device_name()
            if args.device == "cuda"
            else f"CPU, {torch.get_num_threads()} threads"
        )
        print(f"model: {args.model}; {where}; {args.steps} timed steps after 1 warm-up step")
        runs = []
        for i in range(args.repeats):
            order = list(ARMS)[:: 1 if i % 2 == 0 else -1]  # who steps first alternates
            runs.append(run_pair(order, data, args.model, Path(tmp) / f"run-{i}", args.steps))
            print(f"  run {i + 1}: " + "; ".join(_figures(arm, runs[-1][arm]) for arm in ARMS), flush=True)
    tokens = {r["tokens"] for run in runs for r in run.values()}
    if len(tokens) > 1:
        print(f"warning: the arms saw different token counts {sorted(tokens)}")
    for key, unit in (("tokens_per_s", "tokens/s"), ("tokens_per_cpu_s", "tokens/CPU-s")):
        median = {arm: statistics.median(run[arm][key] for run in runs) for arm in ARMS}
        ratio = statistics.median(run["selfinstruct"][key] / run["trl"][key] for run in runs)
        arms = ", ".join(f"{arm} {median[arm]:.1f}" for arm in ARMS)
        print(f"median {unit} over {len(runs)} runs: {arms}; ratio selfinstruct/trl {ratio:.3f}")
    between = ", ".join(
        f"{arm} {statistics.median(run[arm]['ms_between_steps'] for run in runs):.1f}" for arm in ARMS
    )
    print(f"median ms per step outside the steps (logging, callbacks, next batch): {between}")


def _figures(arm: str, r: dict) -> str:
    return (
        f"{arm} {r['tokens']} tokens in {r['seconds']:.2f} s = {r['tokens_per_s']:.1f} tokens/s"
        f" ({r['tokens_per_cpu_s']:.1f}/CPU-s, {r['ms_between_steps']:.1f} ms/step between steps)"
    )


if __name__ == "__main__":
    main()
