"""Chinese and other scripts: tokens, language detection, heuristics and prompts."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rouge_score.tokenizers import DefaultTokenizer

from selfinstruct.config import RunConfig
from selfinstruct.filters import HeuristicFilter
from selfinstruct.filters.rouge_index import RougeIndex
from selfinstruct.filters.tokenizers import (
    count_words,
    default_tokenizer,
    detect_language,
    rouge_tokens,
    unicode_tokens,
)
from selfinstruct.prompts import (
    build_classification_prompt,
    build_instance_prompt,
    build_instruction_prompt,
    instance_prompt_tail,
    parse_classification,
    parse_instances,
)
from selfinstruct.resources import resource_path
from selfinstruct.tasks import Instance

DEFAULT = HeuristicFilter.from_file(resource_path("filters/default.toml"))


def test_unicode_tokens_split_cjk_into_characters_and_keep_other_words():
    assert unicode_tokens("写一首关于春天的诗 (Hello-World 42)") == [
        *"写一首关于春天的诗",
        "hello",
        "world",
        "42",
    ]
    assert unicode_tokens("日本語のテキスト") == list("日本語のテキスト")
    assert unicode_tokens("한국어 문장") == list("한국어문장")
    assert unicode_tokens("हिन्दी नमस्ते") == ["हिन्दी", "नमस्ते"]  # combining marks stay in the word
    assert unicode_tokens("Écris un Poème") == ["écris", "un", "poème"]


@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_unicode_tokens_equal_rouge_score_tokens_on_ascii(text):
    assert unicode_tokens(text) == DefaultTokenizer().tokenize(text)


@given(st.text())
def test_rouge_tokens_equal_rouge_score_tokens_on_any_text(text):
    assert rouge_tokens(text) == DefaultTokenizer().tokenize(text)


@pytest.mark.parametrize("text", ["KELVIN \u212a", "\u0130stanbul", "a\nb", "ß-ẞ", "x\u0300y"])
def test_rouge_tokens_follow_rouge_score_where_lowercasing_makes_ascii(text):
    assert rouge_tokens(text) == DefaultTokenizer().tokenize(text)


def test_the_unicode_tokenizer_sees_chinese_near_duplicates():
    a, b = "写一首关于春天的诗", "写一首关于秋天的诗"
    for tokenizer, score in [(rouge_tokens, 0.0), (unicode_tokens, pytest.approx(8 / 9))]:
        index = RougeIndex(0.7, tokenizer)
        index.add(a)
        assert index.most_similar(b)[1] == score  # rouge_score's tokens see nothing in Chinese


def test_language_and_tokenizer_follow_the_seeds():
    zh = ["把这段话翻译成英文。", "写一首关于秋天的诗。"]
    en = ["Translate the sentence into French.", "Name three rivers in Europe."]
    assert (detect_language(zh), default_tokenizer(zh)) == ("zh", "unicode")
    assert (detect_language(en), default_tokenizer(en)) == ("en", "rouge")
    assert default_tokenizer(["Écris un court poème sur la mer déchaînée."]) == "unicode"
    config = RunConfig()
    config.resolve_auto(zh)
    assert (config.language, config.tokenizer) == ("zh", "unicode")
    pinned = RunConfig(language="en", tokenizer="rouge")
    pinned.resolve_auto(zh)
    assert (pinned.language, pinned.tokenizer) == ("en", "rouge")


def test_a_cjk_character_counts_as_a_word():
    assert count_words("写一首诗") == 4
    assert count_words("用 Python 写一个函数") == 7
    assert count_words("Sort the numbers.") == 3


@pytest.mark.parametrize(
    "text, reason",
    [
        ("写诗", "too_short"),
        ("写一首诗", None),
        ("根据这张图片写一段说明。", "blacklisted_keyword"),
        ("为这段视频配一段解说词。", "blacklisted_keyword"),
        ("“请总结下面这段话。", "leading_punctuation"),
        ("请用三句话总结下面这段会议记录。", None),
    ],
)
def test_heuristics_on_chinese(text, reason):
    assert DEFAULT.reason(text) == reason


def test_chinese_prompts():
    assert build_instruction_prompt(["写一首诗。", "把句子翻译成英文。"], "zh") == (
        "请想出一系列各不相同的任务：\n1. 写一首诗。\n2. 把句子翻译成英文。\n3."
    )
    assert build_classification_prompt("判断评价的情感。", "zh").endswith(
        "任务：判断评价的情感。\n是否为分类任务？"
    )
    assert instance_prompt_tail(build_instance_prompt("写一首诗。", False, "zh")) == "输入："
    assert instance_prompt_tail(build_instance_prompt("判断情感。", True, "zh")) == "类别："


@pytest.mark.parametrize("answer, verdict", [("是", True), (" 否", False), ("不是", False), ("也许", None)])
def test_parse_chinese_classification(answer, verdict):
    assert parse_classification(answer) is verdict


def test_parse_chinese_instances():
    text = "输入：<无>\n输出：春眠不觉晓\n示例 2\n输入：今天下雨\n输出： 雨天\n适合读书"
    assert parse_instances(text, False).instances == [
        Instance(input="", output="春眠不觉晓"),
        Instance(input="今天下雨", output="雨天\n适合读书"),
    ]
    text = "类别：好评\n输入：很好用。\n类别：差评\n输入：坏了。"
    assert parse_instances(text, True).instances == [
        Instance(input="很好用。", output="好评"),
        Instance(input="坏了。", output="差评"),
    ]
