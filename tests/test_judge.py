import json
import re

import pytest

from selfinstruct.judge import (
    JUDGE_CONTINUATION_REGEX,
    JUDGE_MAX_TOKENS,
    JUDGE_OPEN,
    JUDGE_SCHEMA,
    JUDGE_TEMPERATURE,
    REASON_MAX_CHARS,
    Judgement,
    build_judge_prompt,
    judge_response_format,
    one_sentence,
    parse_judgement,
)

EN_PROMPT = """\
Rate one example of an instruction-following dataset: how well does the output carry out the \
instruction for the given input? Use this scale (the Self-Instruct ratings A to D):
5 = A: valid and satisfying; correct and complete.
4 = B: acceptable, with minor errors or imperfections.
3 = between B and C: responds to the instruction, but with a clear error or omission.
2 = C: responds to the instruction, but with significant errors in the content.
1 = D: irrelevant or invalid; also when the instruction or the input makes no sense.

Instruction: Sort the numbers from smallest to largest.
Input: 42, 7, 19
Output: 7, 19, 42

Answer with a JSON object with two keys: "score", a whole number from 1 to 5, and "reason", one \
sentence that says why.
Answer: {"score":"""

ZH_PROMPT = """\
为指令数据集中的一条示例评分：对给定的输入，输出完成指令的程度如何？\
评分标准（对应 Self-Instruct 的 A 到 D 等级）：
5 = A：有效且令人满意，正确而完整。
4 = B：可以接受，但有小的错误或瑕疵。
3 = 介于 B 和 C 之间：回应了指令，但有明显的错误或遗漏。
2 = C：回应了指令，但内容有严重错误。
1 = D：无关或无效；指令或输入本身不合理时也给 1 分。

指令：给这家面包店起个名字。
输入：<无>
输出：每日面包坊

用一个 JSON 对象回答，它有两个键："score"，1 到 5 的整数；"reason"，用一句话说明理由。
回答：{"score":"""


def test_english_prompt_states_the_rubric_then_the_record_and_leaves_the_answer_open():
    prompt = build_judge_prompt("Sort the numbers\nfrom smallest to  largest.", "42, 7, 19\n", " 7, 19, 42")
    assert prompt == EN_PROMPT
    assert prompt.endswith(JUDGE_OPEN)


def test_chinese_prompt_writes_an_empty_input_as_none():
    assert build_judge_prompt("给这家面包店起个名字。", "", "每日面包坊", lang="zh") == ZH_PROMPT


def test_prompt_keeps_the_lines_of_a_multiline_output_and_marks_an_empty_one():
    prompt = build_judge_prompt("Give two tips.", "  ", "1. Sleep.\n2. Drink water.\n")
    assert "\nInput: <none>\nOutput: 1. Sleep.\n2. Drink water.\n\nAnswer with a JSON" in prompt
    assert "\nOutput: <none>\n" in build_judge_prompt("Name a color.", "", "")


def test_schema_asks_for_an_integer_score_1_to_5_and_a_short_reason_and_nothing_else():
    assert JUDGE_SCHEMA == {
        "type": "object",
        "properties": {
            "score": {"type": "integer", "minimum": 1, "maximum": 5},
            "reason": {"type": "string", "maxLength": 200},
        },
        "required": ["score", "reason"],
        "additionalProperties": False,
    }
    assert judge_response_format() == {
        "type": "json_schema",
        "json_schema": {"name": "judgement", "schema": JUDGE_SCHEMA},
    }


def test_continuation_regex_completes_the_open_object_to_one_the_schema_accepts():
    assert JUDGE_CONTINUATION_REGEX == r' ?[1-5], "reason": "[^"\\\n]{1,200}"\}'
    text = ' 4, "reason": "Sorted, but the order of 7 and 19 is hard to read."}'
    assert re.fullmatch(JUDGE_CONTINUATION_REGEX, text)
    assert json.loads(JUDGE_OPEN + text) == {"score": 4, "reason": text[15:-2]}
    for bad in (' 6, "reason": "x"}', ' 4, "reason": ""}', ' 4, "reason": "a\nb"}', " 4}"):
        assert not re.fullmatch(JUDGE_CONTINUATION_REGEX, bad)


def test_judge_samples_greedily_and_briefly():
    assert JUDGE_TEMPERATURE == 0.0
    assert JUDGE_MAX_TOKENS == 160


@pytest.mark.parametrize(
    "text, expected",
    [
        # strict JSON: a chat answer, and a completion with the open prefix put back
        ('{"score": 5, "reason": "Correct and complete."}', Judgement(5, "Correct and complete.")),
        (JUDGE_OPEN + ' 2, "reason": "Wrong language."}', Judgement(2, "Wrong language.")),
        ('{"score": 4, "reason": "基本正确，但漏了一个日期。"}', Judgement(4, "基本正确，但漏了一个日期。")),
        ('{"score": 3}', Judgement(3, "")),
        ('{"score": 3, "reason": null}', Judgement(3, "")),
        ('{"score": 2, "reason": "Wrong\nanswer."}', Judgement(2, "Wrong answer.")),
        ('{"Score": 4.0, "Reason": "Fine."}', Judgement(4, "Fine.")),
        ('{"score": "5", "reason": "Good."}', Judgement(5, "Good.")),
        # a whole object after the open one: what a completion constrained by the schema writes
        (JUDGE_OPEN + '{"score": 1, "reason": "Off topic."}', Judgement(1, "Off topic.")),
        # JSON inside code fences or prose
        ('```json\n{"score": 4, "reason": "Minor slip."}\n```', Judgement(4, "Minor slip.")),
        ('My rating: {"score": 2, "reason": "Many errors."} Hope it helps.', Judgement(2, "Many errors.")),
        ('{"judgement": {"score": 5, "reason": "Right."}}', Judgement(5, "Right.")),
        ("{'score': 3, 'reason': 'Partly right.'}", Judgement(3, "Partly right.")),
        ('{"评分": 4, "理由": "基本正确。"}', Judgement(4, "基本正确。")),
        # key lines, and objects that do not parse
        ("Score: 4\nReason: One number is missing. Else fine.", Judgement(4, "One number is missing.")),
        ("Reason: Nonsense.\nScore: 1", Judgement(1, "Nonsense.")),
        ("score = 5", Judgement(5, "")),
        ("**Score:** 4\n**Reason:** Good.", Judgement(4, "Good.")),
        ("Score: **2**", Judgement(2, "")),
        ("Score: 4/5", Judgement(4, "")),
        (JUDGE_OPEN + ' 4, "reason": "Right, but cut', Judgement(4, "Right, but cut")),
        (JUDGE_OPEN + ' 3, "reason": "Says \\"hi\\" only."', Judgement(3, 'Says "hi" only.')),
        ('{"score": 5, "reason": "Correct",}', Judgement(5, "Correct")),
        ("评分：4\n理由：翻译准确，但语气不够自然。", Judgement(4, "翻译准确，但语气不够自然。")),
        ("分数: 2", Judgement(2, "")),
        ("得分：５分", Judgement(5, "")),
        ("评分：３", Judgement(3, "")),
        ('{"score"：４，"reason"："通顺。"}', Judgement(4, "通顺。")),
        # a bare number as the whole answer
        (" 4", Judgement(4, "")),
        ("5/5", Judgement(5, "")),
        ("3 out of 5.", Judgement(3, "")),
        ("４分。", Judgement(4, "")),
    ],
)  # fmt: skip
def test_parse_reads_a_judgement(text, expected):
    assert parse_judgement(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "The output looks fine to me.",
        "输出看起来不错。",
        '{"score": 0, "reason": "Empty."}',
        '{"score": 6, "reason": "Excellent."}',
        '{"score": 4.5, "reason": "Between."}',
        '{"score": true, "reason": "Yes."}',
        '{"score": null, "reason": "None."}',
        '{"score": "four", "reason": "Good."}',
        '{"score": [4], "reason": "Good."}',
        '{"reason": "No score given."}',
        "Score: 8/10",
        JUDGE_OPEN + ' 1 to 5, "reason": "one sentence"}',  # the rubric's words copied back
        "Score: 4-5",
        "评分：1 到 5",
        "Score: 9",
        "评分：0",
        "分数：10",
        "12",
        "1. The output sorts the numbers.",
        "B",
        JUDGE_OPEN + " Describe the water cycle.\n10. List three rivers.",
    ],
)
def test_parse_gives_none_without_a_score_from_1_to_5(text):
    assert parse_judgement(text) is None


def test_reason_is_cut_to_one_sentence_on_one_line():
    text = '{"score": 4, "reason": "Mostly right.\\nBut the second line\\nis wrong. Also more."}'
    assert parse_judgement(text) == Judgement(4, "Mostly right.")
    assert one_sentence("  The value 3.5 is\n right! Then more.") == "The value 3.5 is right!"
    assert one_sentence("翻译正确。语气自然。") == "翻译正确。"
    assert one_sentence("Is it right? Yes.") == "Is it right?"


def test_long_reason_is_cut_at_a_word_to_the_cap():
    reason = one_sentence("word " * 100)
    assert len(reason) <= REASON_MAX_CHARS
    assert reason == "word " * 39 + "word…"
    assert one_sentence("abcdefghij " * 30) == "abcdefghij " * 17 + "abcdefghij…"  # not a split word
    chinese = one_sentence("很" * 300)
    assert chinese == "很" * (REASON_MAX_CHARS - 1) + "…"
