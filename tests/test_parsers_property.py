"""Parsers never crash on model output, and random or adversarial text never yields an accepted
empty or garbled instruction (property tests)."""

import unicodedata

from hypothesis import example, given, settings
from hypothesis import strategies as st

from selfinstruct.filters import HeuristicFilter
from selfinstruct.filters.instances import apply_instance_rules
from selfinstruct.prompts import parse_classification, parse_instances, parse_instructions
from selfinstruct.resources import resource_path

HEURISTICS = HeuristicFilter.from_file(resource_path("filters/default.toml"))

numbered = st.lists(
    st.tuples(st.integers(0, 120), st.sampled_from([".", ")", " .", ""]), st.text(max_size=60)), max_size=20
).map(lambda items: "\n".join(f"{n}{sep} {t}" for n, sep, t in items))
binary = st.binary(max_size=400).map(lambda b: b.decode("utf-8", errors="replace"))
adversarial = st.sampled_from([
    "", "\n\n\n", "1.\n2.\n3.", "1. 2. 3. 4.", '1. "Write a story about', "16. 17. 18.",
    "1. 写一首关于春天的诗\n2. 把这句话翻译成英文", "1. \x00\x01\x02 abc", "1. ???? !!!! ....",
    "1. " + "word " * 500, "Input: Output: Input:", "1. Summarize the text.\n\n2. Lost item",
])  # fmt: skip
model_output = st.one_of(st.text(max_size=600), numbered, binary, adversarial)


def acceptable(text: str) -> bool:
    return bool(text.strip()) and "\n" not in text and text == text.strip()


@settings(max_examples=400, deadline=None)
@given(model_output, st.booleans())
@example("1.\n2.\n3.", False)
@example("1. \ufffd\ufffd\ufffd\ufffd \ufffd\ufffd", False)
def test_instructions_accepted_from_any_text_are_never_empty_or_garbled(text, truncated):
    parsed = parse_instructions(text, truncated)
    for instruction in parsed.instructions:
        assert acceptable(instruction)
        if HEURISTICS.check(instruction).kept:
            assert len(instruction.split()) >= 1
            assert "\ufffd" not in instruction
            assert not any(unicodedata.category(ch) == "Cc" for ch in instruction)
            letters = sum(ch.isalpha() for ch in instruction)
            assert letters >= 0.3 * len(instruction.replace(" ", ""))


@settings(max_examples=300, deadline=None)
@given(model_output, st.booleans(), st.booleans())
def test_instance_parsing_never_crashes_and_kept_outputs_are_not_empty(text, is_clf, truncated):
    for opener in ("Input:", "Class label:", "输入：", ""):
        parsed = parse_instances(opener + text, is_clf, truncated)
        kept, _ = apply_instance_rules(parsed.instances, 5)
        assert all(inst.output.strip() for inst in kept)


@given(st.text(max_size=50))
def test_classification_answer_is_yes_no_or_unknown(text):
    assert parse_classification(text) in (True, False, None)
