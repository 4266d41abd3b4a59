"""Training records: read them, check them, and format them as prompt + completion.

Three layouts are read, one record per JSONL line or per item of a JSON array:
- our `dataset.jsonl` and Alpaca: `{"instruction", "input", "output"}` (`input` optional, extra keys ignored);
- chat: `{"messages": [{"role", "content"}, ...]}` ending with an assistant message.

Every record becomes a list of messages. The last message (the assistant's response) is the completion,
everything before it the prompt, so the loss falls on the response only (trl's completion_only_loss).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from selfinstruct.errors import UserError
from selfinstruct.tasks import read_json_rows

Message = dict[str, str]
ROLES = ("system", "user", "assistant")

# For tokenizers without a chat template: the Alpaca prompt layout, one header per turn.
PLAIN_PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)
PLAIN_HEADERS = {"user": "### Instruction:\n", "assistant": "### Response:\n"}


def load_conversations(path: Path) -> list[list[Message]]:
    """Read a data file into one message list per record; every problem is a UserError naming the place."""
    path = Path(path)
    rows = read_json_rows(
        path,
        "data file",
        "record",
        "data file not found — pass --data with e.g. a run's dataset.jsonl",
        "not UTF-8 text — training data is JSON or JSONL",
    )
    return [to_messages(where, row) for where, row in rows]


def to_messages(where: str, row: Any) -> list[Message]:
    """One record (instruction/input/output or chat messages) as a message list ending with the response."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object with 'instruction' and 'output' (or 'messages')")
    if "messages" in row:
        return _chat_messages(where, row["messages"])
    for field in ("instruction", "output"):
        value = row.get(field)
        if not isinstance(value, str) or not value.strip():
            got = "missing" if field not in row else f"got {value!r}"
            raise UserError(f"{where}: field '{field}' must be a non-empty string ({got}) — fix or drop it")
    extra = row.get("input") or ""
    if not isinstance(extra, str):
        raise UserError(f"{where}: field 'input' must be a string (got {extra!r})")
    user = f"{row['instruction']}\n\n{extra}" if extra.strip() else row["instruction"]
    return [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]


def _chat_messages(where: str, messages: Any) -> list[Message]:
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{where}: field 'messages' must be a non-empty list of role/content objects")
    out = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if role not in ROLES or not isinstance(content, str):
            raise UserError(
                f"{where}: field 'messages.{i}' needs 'role' ({', '.join(ROLES)}) and string 'content'"
            )
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "assistant" or not out[-1]["content"].strip():
        raise UserError(f"{where}: field 'messages' must end with a non-empty assistant message")
    if not any(m["role"] == "user" for m in out[:-1]):
        raise UserError(f"{where}: field 'messages' has no user message before the response")
    return out


def render_plain(messages: list[Message]) -> str:
    """The prompt in the plain Alpaca-style layout, ending with the response header."""
    parts = [PLAIN_PREAMBLE + "\n\n"]
    for m in messages:
        header = "" if m["role"] == "system" else PLAIN_HEADERS[m["role"]]
        parts.append(header + m["content"] + "\n\n")
    return "".join(parts) + PLAIN_HEADERS["assistant"]


def format_example(messages: list[Message], chat: bool) -> dict[str, Any]:
    """A prompt/completion record: conversational (chat template applied by trl) or plain text."""
    if chat:
        return {"prompt": messages[:-1], "completion": messages[-1:]}
    return {"prompt": render_plain(messages[:-1]), "completion": messages[-1]["content"]}


def split_records(records: list[Any], eval_fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Hold out round(n * fraction) records (at least one) for evaluation, chosen with the seed."""
    if eval_fraction == 0:
        return records, []
    n_eval = max(1, round(len(records) * eval_fraction))
    if n_eval >= len(records):
        raise UserError(
            f"--eval-fraction {eval_fraction} leaves no training records out of {len(records)} — lower it"
        )
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    train = [r for i, r in enumerate(records) if i not in held]
    return train, [r for i, r in enumerate(records) if i in held]
