"""Prompt builders and parsers: pure functions over strings (templates live in templates/)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from selfinstruct.tasks import Instance

# Stop generation at the 16th list item or a blank line, as the Self-Instruct code did.
INSTRUCTION_STOP = ["\n\n", "\n16", "16.", "16 ."]
INSTANCE_STOP = ["\nTask:", "\n任务："]
NO_INPUT = {"<none>", "<noinput>", "<no input>", "<无>", "无"}
LANGUAGES = ("en", "zh")

_WS = re.compile(r"\s+")
_ITEM = re.compile(r"^\s*\d{1,3}\s*[.)](?:\s+|$)")
_EXAMPLE = re.compile(r"^\s*(?:Example|示例)\s*\d+\s*[:：]?\s*$", re.IGNORECASE)
# The labels of the instance templates, English and Chinese, mapped to one key each.
_LABELS = {"input": "input", "output": "output", "class label": "class label"}
_LABELS |= {"输入": "input", "输出": "output", "类别": "class label"}
_LABEL = re.compile(
    r"^\s*(Input|Output|Class label|输入|输出|类别)\s*\d*\s*[:：]", re.IGNORECASE | re.MULTILINE
)
_ANSWERS = {"yes": True, "no": False, "是": True, "否": False, "不": False}


@cache
def template(name: str, lang: str = "en") -> str:
    return files("selfinstruct").joinpath("templates", lang, f"{name}.txt").read_text(encoding="utf-8")


def one_line(text: str) -> str:
    return _WS.sub(" ", text).strip()


def build_instruction_prompt(demos: list[str], lang: str = "en") -> str:
    """A numbered list of the demo instructions, left open at the next number for the model."""
    lines = [template("instructions", lang).rstrip("\n")]
    lines += [f"{i}. {one_line(d)}" for i, d in enumerate(demos, 1)]
    lines.append(f"{len(demos) + 1}.")
    return "\n".join(lines)


@dataclass
class ParsedInstructions:
    instructions: list[str]
    truncated: str | None = None  # the last item, when the response hit the length limit


def parse_instructions(text: str, truncated: bool = False) -> ParsedInstructions:
    """Split a continuation of the numbered list into instructions.

    Text before the first numbered line belongs to the item the prompt opened. A line without a
    number continues the current item; the first blank line after some text ends the list. When
    the response was cut off by the length limit its last item is incomplete and set apart.
    """
    items: list[list[str]] = [[]]
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            if any(s.strip() for s in items[-1]) or len(items) > 1:
                break
            continue
        match = _ITEM.match(line)
        if match:
            items.append([line[match.end() :]])
        else:
            items[-1].append(line)
    found = [one_line(" ".join(item)) for item in items]
    found = [f for f in found if f]
    cut = found.pop() if truncated and found else None
    return ParsedInstructions(found, cut)


def build_classification_prompt(instruction: str, lang: str = "en") -> str:
    return template("classification", lang).replace("{{instruction}}", one_line(instruction)).rstrip("\n")


def parse_classification(text: str) -> bool | None:
    """True for Yes/是, False for No/否/不是, None when the answer is neither."""
    word = re.match(r"\s*([A-Za-z]+|[是否不])", text)
    return _ANSWERS.get(word.group(1).lower()) if word else None


def build_instance_prompt(instruction: str, is_classification: bool, lang: str = "en") -> str:
    """Input-first for ordinary tasks, output-first (labels, then inputs) for classification."""
    name = "instances_output_first" if is_classification else "instances_input_first"
    return template(name, lang).replace("{{instruction}}", one_line(instruction)).rstrip("\n")


def instance_prompt_tail(prompt: str) -> str:
    """The label the prompt leaves open ('Input:' or 'Class label:', or the Chinese ones): a completion
    continues it."""
    return prompt.rsplit("\n", 1)[-1]


@dataclass
class ParsedInstances:
    instances: list[Instance]
    truncated: Instance | None = None


def parse_instances(text: str, is_classification: bool, truncated: bool = False) -> ParsedInstances:
    """Read 'Input:/Output:' pairs (input-first) or 'Class label:/Input:' pairs (output-first).

    `text` must start with the open label of the prompt (see instance_prompt_tail). A value runs
    to the next label; 'Example N' lines are dropped; '<none>' means an empty input.
    """
    text = "\n".join(ln for ln in text.replace("\r\n", "\n").split("\n") if not _EXAMPLE.match(ln))
    marks = list(_LABEL.finditer(text))
    pairs: list[dict[str, str]] = []
    opener = "class label" if is_classification else "input"
    for i, m in enumerate(marks):
        label = _LABELS[m.group(1).lower()]
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        value = text[m.end() : end].strip()
        if label == opener or not pairs or label in pairs[-1]:
            pairs.append({})
        pairs[-1][label] = value
    instances = [_to_instance(p, is_classification) for p in pairs]
    instances = [i for i in instances if i is not None]
    cut = instances.pop() if truncated and instances else None
    return ParsedInstances(instances, cut)


def _to_instance(pair: dict[str, str], is_classification: bool) -> Instance | None:
    output = pair.get("class label" if is_classification else "output")
    inp = pair.get("input")
    if output is None or inp is None:  # both labels are required; a lone one is a repetition loop
        return None
    if inp.lower() in NO_INPUT:
        inp = ""
    return Instance(input=inp, output=output)
