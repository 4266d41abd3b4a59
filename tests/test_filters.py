from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from selfinstruct.errors import UserError
from selfinstruct.filters import HeuristicFilter, NoveltyFilter, RougeIndex, run_filters
from selfinstruct.filters.instances import apply_instance_rules
from selfinstruct.resources import resource_path
from selfinstruct.tasks import Instance

DEFAULT = HeuristicFilter.from_file(resource_path("filters/default.toml"))


@pytest.mark.parametrize(
    "text, reason",
    [
        ("Sort the numbers.", "too_short"),  # 3 words: the paper keeps more than 3
        ("word " * 151, "too_long"),
        ("Describe the picture in detail please.", "blacklisted_keyword"),
        ("Plot the monthly sales figures.", "blacklisted_keyword"),
        ("Tell me how to go to the station.", "blacklisted_keyword"),
        ("Write a program that sorts a list.", "bad_prefix"),
        ('"Summarize this article in one line.', "leading_punctuation"),
        ("Summarize the article in one line.", None),
        ("12 34 56 78 90 = ?", "garbled"),
        ("Summarize the \ufffd\ufffd text in one line.", "garbled"),
        ("Compute 2 + 2 * 3 for me please.", None),
        ("Explain how a mapping function works.", None),  # 'map' only as a whole word
        ("Écris un court poème sur la mer.", None),  # non-ASCII first letters are kept
    ],
)
def test_heuristic_reasons(text, reason):
    assert DEFAULT.check(text).reason == reason


def test_rules_file_errors_name_the_file(tmp_path: Path):
    bad = tmp_path / "rules.toml"
    bad.write_text("[length]\nmin_words = 'four'\n")
    with pytest.raises(UserError, match=r"rules.toml: length.min_words"):
        HeuristicFilter.from_file(bad)
    bad.write_text("[lenght]\n")
    with pytest.raises(UserError, match=r"rules.toml: lenght"):
        HeuristicFilter.from_file(bad)
    with pytest.raises(UserError, match="not found"):
        HeuristicFilter.from_file(tmp_path / "missing.toml")


def test_rouge_matches_rouge_score():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pairs = [
        ("Give three tips for staying healthy.", "Give three tips for staying happy at work."),
        ("What is the capital of France?", "Name the capital city of France."),
        ("Sort the list.", "Sort the list."),
        ("Translate to German.", "写一首诗"),
        ("a b c d e f g", "g f e d c b a"),
    ]
    for a, b in pairs:
        index = RougeIndex(0.7)
        index.add(a)
        assert index.most_similar(b)[1] == scorer.score(a, b)["rougeL"].fmeasure


def test_novelty_filter_reports_the_most_similar_pool_item():
    pool = RougeIndex(0.7)
    for text in ["Give three tips for staying healthy.", "Name a fruit."]:
        pool.add(text)
    novelty = NoveltyFilter(pool)
    near = novelty.check("Give three tips for staying healthy and fit.")
    assert near.reason == "too_similar"
    assert near.most_similar == "Give three tips for staying healthy."
    kept = novelty.check("Explain how vaccines train the immune system.")
    assert kept.kept and kept.similarity < 0.7


def test_run_filters_stops_at_the_first_reject():
    pool = RougeIndex(0.7)
    pool.add("Write a program to add numbers.")
    decision = run_filters([DEFAULT, NoveltyFilter(pool)], "Write a program to add numbers.")
    assert decision.reason == "bad_prefix"


def test_instance_rules():
    instances = [
        Instance(input="a", output="A"),
        Instance(input="a", output="A"),  # duplicate
        Instance(input="", output=""),  # empty output
        Instance(input="same", output="same"),
        Instance(input="Question:", output="x"),  # incomplete
        Instance(input="q", output="yes"),
        Instance(input="q", output="no"),  # conflicting with the one above: both go
        Instance(input="", output="free text"),
    ]
    kept, drops = apply_instance_rules(instances, max_instances=5)
    assert kept == [Instance(input="a", output="A"), Instance(input="", output="free text")]
    assert drops == {
        "duplicate_instance": 1,
        "empty_output": 1,
        "input_equals_output": 1,
        "incomplete": 1,
        "conflicting_outputs": 2,
    }


def test_instance_rules_cap_the_count():
    kept, drops = apply_instance_rules([Instance(input=str(i), output=f"out {i}") for i in range(7)], 5)
    assert len(kept) == 5 and drops == {"over_max_instances": 2}


def test_near_duplicate_records_across_tasks():
    from selfinstruct.filters.instances import NearDuplicateRecords

    dedup = NearDuplicateRecords(threshold=0.8)
    text = "Translate the sentence into French"
    inp = "The weather in the mountains was cold and windy all week long"
    assert not dedup.is_duplicate("t0-0", "t0", text, inp)
    assert not dedup.is_duplicate("t0-1", "t0", text, inp)  # same task: left to the instance rules
    assert dedup.is_duplicate("t1-0", "t1", text + ".", inp + "!")  # another task, same tokens
    assert not dedup.is_duplicate("t1-1", "t1", "Summarize the report in one line", "Sales rose 4%.")
    assert not dedup.is_duplicate("t2-0", "t2", "", "")  # nothing to compare


def test_near_duplicate_records_are_datasketchs():
    """The sketches are datasketch's MinHash of the shingles, and the decisions those of its
    MinHashLSH with each key's task id kept beside it."""
    import random

    from datasketch import MinHash, MinHashLSH

    from selfinstruct.filters.instances import NearDuplicateRecords, _shingles
    from selfinstruct.filters.tokenizers import unicode_tokens

    rng = random.Random(0)
    words = "the a report sales rose fell by four percent in march april city river cold windy week".split()
    texts = [" ".join(rng.choices(words, k=rng.randint(0, 14))) for _ in range(60)]
    texts += ["写一首关于春天的诗", "写一首关于秋天的诗", "把这句话翻译成英文", ""]
    records = []
    for n in range(600):
        instruction = records[-1][2] if records and rng.random() < 0.3 else rng.choice(texts)
        words_in = rng.choice(texts).split()
        if words_in and rng.random() < 0.5:
            del words_in[rng.randrange(len(words_in))]  # an edited copy
        task = records[-1][1] if records and instruction == records[-1][2] else f"t{n}"
        records.append((f"{task}-{n}", task, instruction, " ".join(words_in)))

    for threshold in (0.9, 0.7, 0.5):
        dedup = NearDuplicateRecords(threshold=threshold)
        lsh, task_of = MinHashLSH(threshold=threshold, num_perm=128), {}
        m, duplicates = MinHash(num_perm=128), 0  # the index keeps band hashes: one sketch will do
        for key, task, instruction, inp in records:
            head, tail = unicode_tokens(instruction), unicode_tokens(inp)
            bridge = [f"{head[-1]} {tail[0]}"] if head and tail else []
            shingles = _shingles(head) + _shingles(tail) + bridge
            sketch = dedup._minhash(instruction, inp)
            expected = None
            if shingles:
                m.clear()
                m.update_batch([s.encode() for s in shingles])
                assert sketch is not None and (sketch == m.hashvalues).all()
                expected = any(task_of[k] != task for k in lsh.query(m))
                if not expected:
                    lsh.insert(key, m)
                    task_of[key] = task
            else:
                assert sketch is None
            assert dedup.is_duplicate(key, task, instruction, inp) == bool(expected)
            duplicates += bool(expected)
        assert duplicates > 20


def rules(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        (
            '[keywords]\nwords = ["image", ""]\n',
            "rules.toml: keywords.words.1: '' is blank and would reject every",
        ),
        ('[keywords]\nwords = ["  "]\n', "rules.toml: keywords.words.0: '  ' is blank"),
        ('[prefixes]\nreject = [""]\n', "rules.toml: prefixes.reject.0: '' is blank"),
        (
            "[length]\nmin_words = 200\nmax_words = 150\n",
            r"rules.toml: length: min_words \(200\) is greater than max_words \(150\), which rejects every",
        ),
    ],
)
def test_rules_that_reject_everything_are_refused(tmp_path: Path, text, message):
    with pytest.raises(UserError, match=message):
        HeuristicFilter.from_file(rules(tmp_path, text))


def test_equal_length_bounds_are_allowed(tmp_path: Path):
    only_five = HeuristicFilter.from_file(rules(tmp_path, "[length]\nmin_words = 5\nmax_words = 5\n"))
    assert only_five.check("Name five big rivers please.").reason is None
    assert only_five.check("Name five big rivers now please.").reason == "too_long"


def test_rules_and_keyword_files_that_are_folders_or_not_utf8(tmp_path: Path):
    with pytest.raises(UserError, match=f"{tmp_path}: is a directory, not a file — pass --filters"):
        HeuristicFilter.from_file(tmp_path)
    (tmp_path / "latin1.toml").write_bytes(b"[prefixes]\nreject = ['Caf\xe9']\n")
    with pytest.raises(UserError, match="latin1.toml: not UTF-8 text"):
        HeuristicFilter.from_file(tmp_path / "latin1.toml")
    (tmp_path / "kw").mkdir()
    with pytest.raises(UserError, match=r"rules.toml: keywords.files: .*kw: is a directory, not a file"):
        HeuristicFilter.from_file(rules(tmp_path, '[keywords]\nfiles = ["kw"]\n'))
    (tmp_path / "kw.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(UserError, match=r"rules.toml: keywords.files: .*kw.txt: not UTF-8 text"):
        HeuristicFilter.from_file(rules(tmp_path, '[keywords]\nfiles = ["kw.txt"]\n'))
    (tmp_path / "kw.txt").write_text("\ufeffimage\n", encoding="utf-8")  # a BOM is not part of the word
    bom = HeuristicFilter.from_file(rules(tmp_path, '[keywords]\nfiles = ["kw.txt"]\n'))
    assert bom.keywords == ["image"]


@pytest.mark.parametrize(
    "text, reason",
    [
        ("Explain what a C++ template is.", "blacklisted_keyword"),
        ("Explain what a c++ template is.", "blacklisted_keyword"),
        ("Explain what a C template is.", None),
        ("Port this service to .NET today.", "blacklisted_keyword"),
        ("Port this service to ASP.NET today.", None),  # a word character right before
        ("Write a small server in Node.js please.", "blacklisted_keyword"),
        ("Write a small server in Node please.", None),
        ("Describe the image in detail please.", "blacklisted_keyword"),
        ("Describe the image, in detail please.", "blacklisted_keyword"),
        ("Describe the satellite imagery in detail.", None),  # whole keywords only
        ("Describe the images in detail please.", None),  # `images` is not on this list
    ],
)
def test_keywords_with_punctuation_match_as_whole_keywords(tmp_path: Path, text, reason):
    kw = HeuristicFilter.from_file(
        rules(tmp_path, '[keywords]\nwords = ["c++", ".net", "node.js", "image"]\n')
    )
    assert kw.check(text).reason == reason


@pytest.mark.parametrize(
    "output",
    ["<无>", " <无> ", "无", "<none>", "<NoInput>", "<no input>", "<none>\n<无>", "<noinput> <none>"],
)
def test_an_output_of_no_input_markers_is_empty(output):
    kept, drops = apply_instance_rules([Instance(input="", output=output)], max_instances=5)
    assert kept == [] and drops == {"empty_output": 1}


@pytest.mark.parametrize(
    "output", ["无法确定", "Nothing", "none of them", "<none> is the placeholder", "<无>北京"]
)
def test_an_output_with_more_than_markers_is_kept(output):
    kept, drops = apply_instance_rules([Instance(input="q", output=output)], max_instances=5)
    assert kept == [Instance(input="q", output=output)] and drops == {}
