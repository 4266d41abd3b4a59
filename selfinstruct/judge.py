"""The LLM judge's pure parts: the rubric prompt, the answer schema, and the answer parser.

A judge model rates each (instruction, input, output) record with an integer score 1–5 and a
one-sentence reason. The rubric folds in the human rating scale of the Self-Instruct paper (Wang et
al., 2022, arXiv 2212.10560, section 4.4): A valid and satisfying, B acceptable with minor
imperfections, C responds to the instruction but with significant errors, D irrelevant or invalid.
It maps them as 5 = A, 4 = B, 3 = between B and C, 2 = C, 1 = D.

The prompt ends in an open `{"score":` (JUDGE_OPEN) so that a plain completion continues the JSON
object; parse `JUDGE_OPEN + text` for a completion and the text alone for a chat answer.
parse_judgement also finds a whole object written after the open one.

Constrained decoding, as vLLM 0.32 takes it (checked against the embedded server):
- completions: `extra_body={"structured_outputs": {"regex": JUDGE_CONTINUATION_REGEX}}` (the rest of
  the open object), or `{"structured_outputs": {"json": JUDGE_SCHEMA}}` or
  `{"response_format": judge_response_format()}` (a whole object, after the open one);
- chat: `response_format=judge_response_format()`, or the same `structured_outputs` in extra_body.
vLLM ignores the removed `guided_json` (a warning in its log; the output is not constrained), and
an endpoint that does not know these fields may ignore them too: parse every answer either way.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass

from selfinstruct.prompts import one_line, template

JUDGE_OPEN = '{"score":'
JUDGE_TEMPERATURE = 0.0
JUDGE_MAX_TOKENS = 160  # a score and one sentence; a cut-off answer still has its score first
JUDGE_STOP = ["\n\n"]  # for a completion without constrained decoding
REASON_MAX_CHARS = 200
EMPTY = {"en": "<none>", "zh": "<无>"}  # how an empty input or output is shown

JUDGE_SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "reason": {"type": "string", "maxLength": REASON_MAX_CHARS},
    },
    "required": ["score", "reason"],
    "additionalProperties": False,
}
# What may follow JUDGE_OPEN so that the whole is an object JUDGE_SCHEMA accepts.
JUDGE_CONTINUATION_REGEX = rf' ?[1-5], "reason": "[^"\\\n]{{1,{REASON_MAX_CHARS}}}"\}}'

_SCORE_KEYS = ("score", "评分", "分数", "得分")
_REASON_KEYS = ("reason", "理由", "原因")
# Full-width digits, colon, equals sign and slash to half-width, one character for one.
_HALF_WIDTH = str.maketrans("０１２３４５６７８９：＝／", "0123456789:=/")
_NO_EMPHASIS = str.maketrans("*", " ")  # Markdown bold around a key or a score, kept in place
_KEY_END = r"""["']?\s*[:=]\s*"""
# A number, `/ 5` perhaps, but not a range such as `1 to 5` (the rubric's own words copied back).
_NUMBER = r"""["']?(\d+(?:\.\d+)?)(?!\d|\.\d|\s*(?:to|-|–|~|到|至)\s*\d)(?:\s*/\s*(\d+))?"""
_SCORE = re.compile(r"""(?<![A-Za-z_])["']?(?:score|评分|分数|得分)""" + _KEY_END + _NUMBER, re.IGNORECASE)
_REASON = re.compile(r"""(?<![A-Za-z_])["']?(?:reason|理由|原因)""" + _KEY_END, re.IGNORECASE)
_BARE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*(\d+)|out of (\d+)|分)?\s*[.。]?\s*", re.IGNORECASE)
_MAX_BRACES = 8  # closing braces tried for one Python literal
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|[。！？]")


@dataclass(frozen=True)
class Judgement:
    score: int  # 1 (D, irrelevant or invalid) to 5 (A, valid and satisfying)
    reason: str  # one sentence, one line; empty when the answer gave none


def build_judge_prompt(instruction: str, input: str, output: str, lang: str = "en") -> str:
    """The rubric, the record, and the answer format, left open at `{"score":`."""
    fields = {
        "instruction": one_line(instruction),
        "input": input.strip() or EMPTY[lang],
        "output": output.strip() or EMPTY[lang],
    }
    text = template("judge", lang)
    for name, value in fields.items():
        text = text.replace("{{" + name + "}}", value)
    return text.rstrip("\n")


def judge_response_format() -> dict:
    """The chat `response_format` that asks for an object matching JUDGE_SCHEMA."""
    return {"type": "json_schema", "json_schema": {"name": "judgement", "schema": JUDGE_SCHEMA}}


def parse_judgement(text: str) -> Judgement | None:
    """The judgement in a judge's answer, or None when no score 1–5 can be read from it.

    Strict JSON first; then the first object with a score key anywhere in the text, as JSON or as
    a Python literal (code fences, prose, single quotes, the whole object a constrained completion
    writes after the open one); then a `score: 4` / `评分：4` key outside any object (also in a
    cut-off one); then a bare number as the whole answer. Full-width digits and colons count as
    half-width. A score out of 1–5, not a whole number, or out of anything but 5 gives None.
    """
    try:
        found = _keyed(json.loads(text, strict=False))
    except (ValueError, RecursionError):
        found = None
    half = text.translate(_HALF_WIDTH)
    found = found or next(filter(None, map(_keyed, _objects(half))), None)
    if found is not None:
        return _from_object(found)
    plain = half.translate(_NO_EMPHASIS)
    return _from_keys(text, plain) or _bare(plain)


def _objects(text: str):
    """Each value written as JSON, or else as a Python literal, from each opening brace in turn."""
    decoder = json.JSONDecoder(strict=False)  # a newline inside a string, as small models write
    for start in (m.start() for m in re.finditer(r"\{", text)):
        try:
            yield decoder.raw_decode(text, start)[0]
        except (ValueError, RecursionError):
            yield _literal(text, start)


def _literal(text: str, start: int) -> object:
    """The shortest Python literal from `start` to one of the next closing braces, for an object
    JSON does not read because of its single quotes."""
    ends = [m.end() for m in re.finditer(r"\}", text[start:])][:_MAX_BRACES]
    if not ends or "'" not in text[start : start + ends[-1]]:
        return None
    for end in ends:
        try:
            return ast.literal_eval(text[start : start + end])
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
    return None


def _keyed(found: object) -> dict | None:
    """A dict with a score key, its keys lower-cased; else None."""
    if not isinstance(found, dict):
        return None
    keyed = {str(k).strip().lower(): v for k, v in found.items()}
    return keyed if any(k in keyed for k in _SCORE_KEYS) else None


def _from_object(found: dict) -> Judgement | None:
    score = next(found[k] for k in _SCORE_KEYS if k in found)
    reason = next((found[k] for k in _REASON_KEYS if k in found), "")
    if isinstance(score, bool) or not isinstance(score, (int, float, str)):
        return None
    score = _score(str(score).strip().translate(_HALF_WIDTH))
    return Judgement(score, one_sentence("" if reason is None else str(reason))) if score else None


def _from_keys(text: str, plain: str) -> Judgement | None:
    """`score: N` and `reason: ...` read as keys, in lines or in an object that does not parse;
    `plain` is the text with half-width digits and colons and without emphasis, position for position."""
    match = _SCORE.search(plain)
    if not match:
        return None
    score = _score(match.group(1), match.group(2))
    reason = _REASON.search(plain)
    return Judgement(score, _reason_value(text[reason.end() :]) if reason else "") if score else None


def _bare(plain: str) -> Judgement | None:
    """A number on a scale of 5 as the whole answer: `4`, `4/5`, `4 out of 5`, `4分`."""
    match = _BARE.fullmatch(plain)
    score = match and _score(match.group(1), match.group(2) or match.group(3))
    return Judgement(score, "") if score else None


def _reason_value(rest: str) -> str:
    """A quoted value up to its closing quote (JSON escapes undone), else the rest of the line."""
    if rest[:1] not in ('"', "'"):
        return one_sentence(rest.split("\n", 1)[0])
    end = re.search(r"(?<!\\)" + rest[0], rest[1:])
    value = rest[1 : 1 + end.start()] if end else rest[1:]
    if rest[0] == '"':
        try:
            value = json.loads(f'"{value}"')
        except ValueError:
            pass
    return one_sentence(value)


def _score(number: str, out_of: str | None = None) -> int | None:
    """A whole number 1–5 (4.0 counts as 4), given on no scale or on a scale of 5."""
    if out_of is not None and out_of != "5":
        return None
    try:
        value = float(number)
    except ValueError:
        return None
    return int(value) if value.is_integer() and 1 <= value <= 5 else None


def one_sentence(text: str) -> str:
    """The first sentence of the text, on one line, cut at a word to REASON_MAX_CHARS."""
    text = one_line(text)
    end = _SENTENCE_END.search(text)
    if end:
        text = text[: end.end()]
    if len(text) > REASON_MAX_CHARS:
        cut = text[: REASON_MAX_CHARS - 1]
        if text[len(cut)] != " " and " " in cut[REASON_MAX_CHARS // 2 :]:
            cut = cut.rsplit(" ", 1)[0]  # drop the word the cap splits
        text = cut.rstrip(" ,;:，；：") + "…"
    return text
