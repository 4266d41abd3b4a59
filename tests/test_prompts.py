from selfinstruct.prompts import (
    build_classification_prompt,
    build_instance_prompt,
    build_instruction_prompt,
    instance_prompt_tail,
    parse_classification,
    parse_instances,
    parse_instructions,
)
from selfinstruct.tasks import Instance


def test_instruction_prompt_is_an_open_numbered_list():
    prompt = build_instruction_prompt(["Add two numbers.", "Name a  color\nthat is warm."])
    assert prompt == (
        "Come up with a series of diverse tasks:\n1. Add two numbers.\n2. Name a color that is warm.\n3."
    )


def test_parse_continues_the_open_item_and_splits_numbered_lines():
    text = " Translate the sentence into French.\n4. Give three uses for a brick.\n5.List two rivers in Asia."
    # "5.List" has no space after the number: it is not an item marker, so it continues item 4.
    assert parse_instructions(text).instructions == [
        "Translate the sentence into French.",
        "Give three uses for a brick. 5.List two rivers in Asia.",
    ]


def test_parse_joins_lines_without_numbers_to_the_current_item():
    text = " Write a haiku\nabout the sea.\n10) Sort the list."
    assert parse_instructions(text).instructions == ["Write a haiku about the sea.", "Sort the list."]


def test_parse_stops_at_the_first_blank_line_after_text():
    text = "\n Explain photosynthesis.\n\n11. This comes after a blank line."
    assert parse_instructions(text).instructions == ["Explain photosynthesis."]


def test_parse_skips_empty_items():
    assert parse_instructions(" \n10.\n11. Name a prime number.").instructions == ["Name a prime number."]


def test_parse_sets_a_cut_off_last_item_apart():
    parsed = parse_instructions(" Plan a picnic menu.\n10. Describe the water cycle in", truncated=True)
    assert parsed.instructions == ["Plan a picnic menu."]
    assert parsed.truncated == "Describe the water cycle in"


def test_parse_does_not_take_decimals_or_years_for_item_numbers():
    text = " Round 3.14159 to two places.\n2020 was a leap year; list the next three."
    assert parse_instructions(text).instructions == [
        "Round 3.14159 to two places. 2020 was a leap year; list the next three."
    ]


def test_parse_of_empty_or_only_numbers_is_empty():
    assert parse_instructions("").instructions == []
    assert parse_instructions("10.\n11.\n12.").instructions == []


def test_classification_prompt_ends_with_the_question():
    prompt = build_classification_prompt("Is the email spam?")
    assert prompt.endswith("Task: Is the email spam?\nIs it classification?")
    assert prompt.startswith("Decide whether each task is a classification task")


def test_parse_classification():
    assert parse_classification(" Yes\n\n") is True
    assert parse_classification("no.") is False
    assert parse_classification(" Maybe") is None
    assert parse_classification("") is None


def test_instance_prompts_leave_the_right_label_open():
    assert instance_prompt_tail(build_instance_prompt("Sort the words.", False)) == "Input:"
    assert instance_prompt_tail(build_instance_prompt("Is it spam?", True)) == "Class label:"
    assert build_instance_prompt("Sort the words.", False).endswith(
        "Task: Sort the words.\nExample 1\nInput:"
    )


def test_parse_input_first_instances():
    text = "Input: 3, 1, 2\nOutput: 1, 2, 3\nExample 2\nInput: <none>\nOutput: nothing to sort\n"
    assert parse_instances(text, is_classification=False).instances == [
        Instance(input="3, 1, 2", output="1, 2, 3"),
        Instance(input="", output="nothing to sort"),
    ]


def test_parse_input_first_keeps_multiline_outputs():
    text = "Input: <none>\nOutput: 1. Stretch.\n2. Drink water.\n"
    assert parse_instances(text, False).instances == [
        Instance(input="", output="1. Stretch.\n2. Drink water.")
    ]


def test_parse_drops_a_lone_label_from_a_repetition_loop():
    text = "Input: hello\nOutput: HELLO\nOutput: HELLO again\nOutput: and again"
    assert parse_instances(text, False).instances == [Instance(input="hello", output="HELLO")]


def test_parse_output_first_instances():
    text = (
        "Class label: Positive\nInput: Loved it.\nClass label: Negative\nInput: Hated it.\n"
        "Class label: Neutral\n"
    )
    assert parse_instances(text, is_classification=True).instances == [
        Instance(input="Loved it.", output="Positive"),
        Instance(input="Hated it.", output="Negative"),
    ]


def test_parse_instances_sets_a_cut_off_last_instance_apart():
    text = "Input: a\nOutput: A\nInput: b\nOutput: the letter B in upper ca"
    parsed = parse_instances(text, False, truncated=True)
    assert parsed.instances == [Instance(input="a", output="A")]
    assert parsed.truncated == Instance(input="b", output="the letter B in upper ca")
