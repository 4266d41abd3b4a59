"""The kinds of request a run makes, side by side.

A stage is one kind of request: how its prompt is built, how its answer is read, where generation
stops, and the output format it asks for. Its sampling comes from the config section of the same
name and its model from that section's `backend` (the run's when it names none), so a new stage is
one entry here, one section in config.RunConfig, and the code in pipeline.py that decides what to
ask it and what to do with the answer.

`build` takes the stage's inputs and the prompt language; `parse` the answer text, whether the
length limit cut it off, and the same inputs. A completion continues the prompt: for a stage that
`continues` the prompt's last line (an open label such as `Input:`), the parser reads that line
and the completion together; a chat answer starts afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from selfinstruct.judge import JUDGE_STOP, build_judge_prompt, judge_response_format, parse_judgement
from selfinstruct.prompts import (
    INSTANCE_STOP,
    INSTRUCTION_STOP,
    build_classification_prompt,
    build_instance_prompt,
    build_instruction_prompt,
    instance_prompt_tail,
    parse_classification,
    parse_instances,
    parse_instructions,
)


@dataclass(frozen=True)
class Stage:
    name: str  # its config section, its key in stats.json and in responses.jsonl
    build: Callable[..., str]  # (*inputs, lang) -> prompt
    parse: Callable[..., Any]  # (text, truncated, *inputs) -> the answer
    stop: list[str] | None = None
    continues: bool = False  # a completion continues the prompt's last line
    response_format: dict | None = None  # asked for where the endpoint constrains its output

    def prompt(self, *inputs: Any, lang: str) -> str:
        return self.build(*inputs, lang)

    def read(self, prompt: str, text: str, truncated: bool, api: str, *inputs: Any) -> Any:
        opened = instance_prompt_tail(prompt) if self.continues and api == "completions" else ""
        return self.parse(opened + text, truncated, *inputs)


INSTRUCTIONS = Stage(
    "instructions",
    build=build_instruction_prompt,  # (demos, lang)
    parse=lambda text, truncated, demos: parse_instructions(text, truncated),
    stop=INSTRUCTION_STOP,
)
CLASSIFICATION = Stage(
    "classification",
    build=build_classification_prompt,  # (instruction, lang)
    parse=lambda text, truncated, instruction: parse_classification(text),
)
INSTANCES = Stage(
    "instances",
    build=build_instance_prompt,  # (instruction, is_classification, lang)
    parse=lambda text, truncated, instruction, is_clf: parse_instances(text, is_clf, truncated),
    stop=INSTANCE_STOP,
    continues=True,
)
JUDGE = Stage(
    "judge",
    build=build_judge_prompt,  # (instruction, input, output, lang)
    parse=lambda text, truncated, *record: parse_judgement(text),
    stop=JUDGE_STOP,
    continues=True,
    response_format=judge_response_format(),
)

STAGES = {stage.name: stage for stage in (INSTRUCTIONS, CLASSIFICATION, INSTANCES, JUDGE)}
