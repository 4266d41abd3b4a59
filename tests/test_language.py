"""The language-consistency rule: which instructions and outputs are not in the run's language."""

import json
import random
from pathlib import Path

import pytest

from selfinstruct.filters.language import (
    WRONG_LANGUAGE,
    LanguageCheck,
    asks_for,
    letter_weight,
    prose,
    quoted,
    unquoted,
)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="module")
def en():
    return LanguageCheck("en")


@pytest.fixture(scope="module")
def zh():
    return LanguageCheck("zh")


ENGLISH = [
    "Write a short poem about the spring rain in the mountains.",
    "The capital of France is Paris, which is also its largest city.",
    "Given a dataset of customer records, write a function that filters out the customers from California.",
    "I love 北京 very much, it is a great city to visit.",
    "This is a **bold** statement about the weather today.",
    "- Apples\n- Bananas\n- Oranges\n- Grapes",
    "Here is a Python function that adds two numbers and returns the result.",
]
CHINESE = [
    "写一首关于山中春雨的短诗。",
    "法国的首都是巴黎，也是法国最大的城市。",
    "我今天很累了。",
    "苹果、香蕉、橙子、葡萄",
    "1. 苹果\n2. 香蕉\n3. 橙子",
    # English words, names and code inside Chinese text
    "选择单词“necessary”的正确拼写。",
    "请解释 machine learning 的含义。",
    "比较 iPhone 和 Android 手机的优缺点。",
    "Python是一种广泛使用的高级编程语言。",
    "你可以使用 numpy.array() 来创建数组，例如 np.array([1, 2, 3])。",
    "纽约市排名前五的餐厅是 Katz's Delicatessen、Ippudo NY、Gramercy Tavern、Le Bernardin 和 Peter Luger。",
    "以下是代码：\n```python\ndef add(a, b):\n    return a + b\n```\n这个函数返回两个数之和。",
]
# Too little prose to judge, in either run: numbers, labels, names, formulas, URLs, code.
UNJUDGED = [
    "42",
    "3.14",
    "positive",
    "Yes",
    "Paris",
    "The Beatles",
    "Noun",
    "x = 5",
    "2x + 3 = 7, so x = 2",
    "https://www.example.com/some/long/path/to/a/page.html",
    "Visit book-recommendations.com",
    "我累了",
    "e9gKyd2D",
    "def fibonacci(n):\n    if n <= 1:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)",
    "SELECT name, age FROM users WHERE age > 30 ORDER BY age DESC;",
    "SELECT user_id, SUM(amount) AS total\nFROM orders\nGROUP BY user_id\nORDER BY total DESC\nLIMIT 10;",
    "```python\nfor i in range(10):\n    print(i)\n```",
    "Here is the code:\n```python\ndef add(a, b):\n    return a + b\n```",
    '{"name": "John", "age": 30, "city": "New York"}',
    '<div class="header">Welcome to our website</div>',
]


@pytest.mark.parametrize("text", ENGLISH)
def test_english_is_kept_in_an_english_run_and_found_in_a_chinese_one(en, zh, text):
    assert en.foreign_language(text) is None
    assert en.is_in_language(text)
    assert zh.foreign_language(text) == "en"
    assert not zh.is_in_language(text)


@pytest.mark.parametrize("text", CHINESE)
def test_chinese_is_kept_in_a_chinese_run_and_found_in_an_english_one(en, zh, text):
    assert zh.foreign_language(text) is None
    assert en.foreign_language(text) == "zh"


@pytest.mark.parametrize("text", UNJUDGED)
def test_short_and_non_linguistic_text_is_kept_in_both_runs(en, zh, text):
    assert en.is_in_language(text)
    assert zh.is_in_language(text)


@pytest.mark.parametrize(
    "text, lang",
    [
        ("明日の朝七時に駅に着きます。", "ja"),
        ("오늘 날씨가 정말 좋네요.", "ko"),
        ("¿Dónde está la biblioteca más cercana?", "es"),
        ("Je voudrais réserver une table pour deux personnes ce soir.", "fr"),
        ("Wir treffen uns morgen um acht Uhr am Bahnhof.", "de"),
    ],
)
def test_other_languages_are_named(en, zh, text, lang):
    assert en.foreign_language(text) == lang
    assert zh.foreign_language(text) == lang


@pytest.mark.parametrize("text", ["地球上有多少个大陆？", "建立一个遗传算法来预测股市走势。"])
def test_chinese_varieties_count_as_chinese(en, text):
    # py3langid's best label for much short Mandarin is 'wuu' (Wu); it is reported as Chinese, so
    # that "Translate into Chinese" covers it
    assert en._identifier.rank(text)[0][0] == "wuu"
    assert en.foreign_language(text) == "zh"
    assert en.record_reason("Translate the question into Chinese.", text) is None


@pytest.mark.parametrize(
    "instruction, output",
    [
        (
            "Write a haiku about autumn leaves.",
            "Crimson leaves drift down, whispering of summer gone, the cold wind answers.",
        ),
        ("Classify the sentiment of the review.", "positive"),
        ("Compute the sum of the numbers.", "1542"),
        ("Write a SQL query that lists the users older than 30.", "SELECT * FROM users WHERE age > 30;"),
        ('Translate "Ich bin ein Berliner" into English.', "I am a Berliner."),  # the quote is not judged
        ("Render these English phrases in Spanish.", "La biblioteca cierra temprano los días festivos."),
        ("Translate the sentence into Chinese.", "我每天早上七点起床，然后去公园跑步。"),
        (
            "How would a Japanese speaker say this? Give the Japanese sentence.",
            "明日の朝七時に駅に着きます。",
        ),
    ],
)
def test_english_run_keeps(en, instruction, output):
    assert en.record_reason(instruction, output) is None


@pytest.mark.parametrize(
    "instruction, output",
    [
        (
            "写一首关于秋天落叶的俳句。",
            "Crimson leaves drift down, whispering of summer gone, the cold wind answers.",
        ),
        ("Write a haiku about autumn leaves.", "红叶纷纷落下，诉说着夏天的离去，寒风回应着。"),
        ("写一首关于秋天落叶的俳句。", "红叶纷纷落下。"),  # a Chinese instruction in an English run
        ("Give three tips for staying healthy.", "Mangez équilibré, bougez tous les jours et dormez assez."),
    ],
)
def test_english_run_drops(en, instruction, output):
    assert en.record_reason(instruction, output) == WRONG_LANGUAGE


@pytest.mark.parametrize(
    "instruction, output, input",
    [
        ("写一首关于秋天落叶的俳句。", "红叶纷纷落下，诉说着夏天的离去，寒风回应着。", ""),
        ("判断这条评论的情感倾向。", "positive", ""),
        ("写一个 Python 函数，计算两个数的和。", "def add(a, b):\n    return a + b", ""),
        ("把这段话翻译成英文。", "This shop is famous for its soup dumplings.", "这家店的小笼包很有名。"),
        (
            "请将下面的中文句子译成地道的英语。",
            "The meeting has been moved to Thursday.",
            "会议改到了星期四。",
        ),
        # the task works on English material: the answer is English too
        (
            "从这个句子中删除所有元音。",
            "Th qck brwn fx jmps vr th lzy dg.",
            "The quick brown fox jumps over the lazy dog.",
        ),
        (
            "把句子“The quick brown fox jumps over the lazy dog”中的元音都删掉。",
            "Th qck brwn fx jmps vr th lzy dg.",
            "",
        ),
    ],
)
def test_chinese_run_keeps(zh, instruction, output, input):
    assert zh.record_reason(instruction, output, input) is None


@pytest.mark.parametrize(
    "instruction, output, input",
    [
        (
            "写一首关于秋天落叶的俳句。",
            "Crimson leaves drift down, whispering of summer gone, the cold wind answers.",
            "",
        ),
        ("Write a haiku about autumn leaves.", "红叶纷纷落下，诉说着夏天的离去，寒风回应着。", ""),
        (
            "解释为什么亚伯拉罕·林肯的当选是革命性的时刻。",
            "The election of Abraham Lincoln in 1860 was a revolutionary moment.",
            "",
        ),
        # English input, but the answer should be Chinese: the material is English, the task is not about it
        ("从这个句子中删除所有元音。", "Th qck brwn fx jmps vr th lzy dg.", ""),
    ],
)
def test_chinese_run_drops(zh, instruction, output, input):
    assert zh.record_reason(instruction, output, input) == WRONG_LANGUAGE


def test_prose_sets_code_urls_and_addresses_aside():
    assert (
        prose("See https://a.example/b?c=1 or write to ann@example.org today.")
        == "See   or write to   today."
    )
    assert prose("Visit book-recommendations.com for more.") == "Visit   for more."
    assert prose("Use `np.array()` here.\n```\nx = 1\n```\nDone.") == "Use   here.\nDone."
    assert prose("Steps:\n    x = 1\nprint(x)\nThat is all.") == ""  # most lines are code
    assert prose("First line.\nx = compute(y);\nLast line here.") == "First line.\nLast line here."
    assert prose("你可以使用 np.array() 来创建数组。") == "你可以使用 np.array() 来创建数组。"
    assert prose("The price (in dollars) is high; really.") == "The price (in dollars) is high; really."


def test_quoted_and_unquoted():
    text = 'Translate "Ich bin ein Berliner" and ‘bonjour’, it\'s easy; 把“你好”和「谢谢」译成英文。'
    assert quoted(text) == ['"Ich bin ein Berliner"', "‘bonjour’", "“你好”", "「谢谢」"]
    assert unquoted("Find the synonyms of the word 'Tenacious'.") == "Find the synonyms of the word  ."
    assert unquoted("What's the world's tallest tree?") == "What's the world's tallest tree?"


def test_letter_weight_counts_cjk_characters_as_four_letters():
    assert letter_weight("Hello, world 42") == 10
    assert letter_weight("你好，世界") == 16
    assert letter_weight("Python是一种语言") == 6 + 5 * 4
    assert letter_weight("こんにちは") == 20


def test_asks_for_a_translation_or_a_named_language():
    assert asks_for("Translate the text.", "fr")
    assert asks_for("把这段话翻译成中文。", "en")
    assert asks_for("Give the Italian for this sign.", "it")
    assert asks_for("请用英文回答。", "en")
    assert not asks_for("Give three tips for staying healthy.", "fr")
    assert not asks_for("写一首诗。", "en")


def test_an_unknown_language_is_refused():
    with pytest.raises(ValueError, match="py3langid does not identify xx"):
        LanguageCheck("xx")


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_no_seed_instance_is_dropped(lang, en, zh):
    check = {"en": en, "zh": zh}[lang]
    dropped = []
    for line in (ROOT / "seeds" / f"{lang}.jsonl").read_text(encoding="utf-8").splitlines():
        task = json.loads(line)
        for inst in task["instances"]:
            if check.record_reason(task["instruction"], inst["output"], inst["input"]):
                dropped.append((task["id"], inst["output"]))
    assert dropped == []


@pytest.mark.skipif(not (DATA / "alpaca_zh_carbonz0_part00.json").exists(), reason="no shared data")
def test_alpaca_records_in_both_runs(en, zh):
    rng = random.Random(0)
    english = rng.sample(json.loads((DATA / "alpaca_data_52k.json").read_text(encoding="utf-8")), 1000)
    chinese = rng.sample(
        json.loads((DATA / "alpaca_zh_carbonz0_part00.json").read_text(encoding="utf-8")), 1000
    )

    def dropped(check, records):
        return sum(bool(check.record_reason(r["instruction"], r["output"], r["input"])) for r in records)

    assert dropped(en, english) <= 2
    assert dropped(zh, chinese) <= 5  # the translation left some answers, hashtags and names in English
    assert dropped(en, chinese) >= 990
    assert dropped(zh, english) >= 985
