"""Language consistency: a record whose instruction or output is not in the run's language is
dropped as `wrong_language` (an English answer in a Chinese run, a Chinese one in an English run).

Languages are identified by py3langid, the maintained fork of langid.py (Lui & Baldwin, "langid.py:
An Off-the-shelf Language Identification Tool", ACL 2012): a naive Bayes model over byte n-grams,
retrained on 139 languages, that ships inside the wheel (4.5 MB). It is deterministic and needs no
network. What this module adds is the choice of what to show it and when to believe it:

- Only prose is judged. Fenced and inline code, URLs, e-mail addresses and lines that look like code
  are set aside first, and a text most of whose lines look like code is code (`prose`): code
  keywords are English whatever the run's language.
- Only text with enough letters is judged: MIN_LETTERS letters, a CJK character counting as
  CJK_WEIGHT of them (20 and 4: about four English words, or five Chinese characters). A number, a
  label such as "positive", a name or a formula is below that, and language identification on it is a
  guess, so it is kept.
- The model chooses among CANDIDATES (the run's language is always one), not all 139 languages: on
  short English the full set too often answers Afrikaans, Basque or Luxembourgish.
- A text is foreign when the model gives the run's language less than MIN_SHARE (1%) of the
  probability; the Chinese varieties py3langid tells apart (Wu, Cantonese) count as Chinese.
- An instruction is judged without what it quotes ('Translate "Ich bin ein Berliner" into English').
- An output in another language is kept when the instruction asks for a translation or names that
  language ("Render these phrases in Spanish", "把这段话翻译成英文"), and when the material the task
  works on, the input and what the instruction quotes, is in that language too (remove the vowels of
  an English sentence in a Chinese run). The input is not judged on its own: it is often material in
  another language.

Measured on 8,000 Alpaca records and 8,000 of its Chinese translation: an English run drops 2 of the
English records (translations into a language the instruction does not name: "Localize the
passage", "transcribe it into a different language"), a Chinese run 10 of the Chinese ones (English
answers, hashtags and names the translation left in English, a word-search grid), and each run drops
99.7% (English run) and 99.1% (Chinese run) of the other language's records. A record costs 0.17-0.34
ms of CPU on a noisy host (two texts, most of it py3langid's walk over their bytes), less when its
instruction was judged for an earlier record of the same task: 1.3-1.45x less than through
py3langid's `rank`, which builds and sorts a ranking of every text (`_probabilities` takes the same
steps without it, to the same floats).
"""

from __future__ import annotations

import io
import math
import re
import string
from collections.abc import Iterable
from functools import cache, lru_cache
from operator import itemgetter

import regex

WRONG_LANGUAGE = "wrong_language"
MIN_LETTERS = 20
CJK_WEIGHT = 4
MIN_SHARE = 0.01
# Only the start of a long text is read: its language is settled well before, and the cost grows with
# the length. HEAD_CHARS are searched for code, and the first MAX_CHARS of prose go to the model.
HEAD_CHARS = 1024
MAX_CHARS = 256
# Widely used languages an instruction-following model may answer in.
CANDIDATES = tuple("en zh es fr de pt it nl pl ru tr ar hi ja ko vi id".split())
# py3langid labels that belong to one of our languages: Wu and Cantonese are written Chinese.
_VARIETIES = {"zh": ("wuu", "yue")}
_FOLD = {v: lang for lang, vs in _VARIETIES.items() for v in vs}
# How an instruction names a language it asks for, in English and in Chinese.
LANGUAGE_NAMES = {
    "en": ("English", "英语", "英文", "英語"),
    "zh": ("Chinese", "Mandarin", "Cantonese", "中文", "汉语", "漢語", "普通话", "华语", "粤语", "现代汉语"),
    "es": ("Spanish", "西班牙语", "西班牙文"),
    "fr": ("French", "法语", "法文"),
    "de": ("German", "德语", "德文"),
    "pt": ("Portuguese", "葡萄牙语", "葡萄牙文"),
    "it": ("Italian", "意大利语", "意大利文"),
    "nl": ("Dutch", "荷兰语"),
    "pl": ("Polish", "波兰语"),
    "ru": ("Russian", "俄语", "俄文"),
    "tr": ("Turkish", "土耳其语"),
    "ar": ("Arabic", "阿拉伯语", "阿拉伯文"),
    "hi": ("Hindi", "印地语"),
    "ja": ("Japanese", "日语", "日文", "日本語"),
    "ko": ("Korean", "韩语", "韩文", "朝鲜语", "한국어"),
    "vi": ("Vietnamese", "越南语"),
    "id": ("Indonesian", "印尼语", "印度尼西亚语"),
}

# Fenced and inline code, URLs, e-mail addresses; bare domain names (example.com).
_CODE_SPANS = re.compile(r"```.*?(?:```|\Z)|`[^`\n]*`|(?:https?://|www\.)\S+|[\w.+-]+@[\w-]+\.[\w.]+", re.S)
_TLDS = (".com", ".org", ".net", ".edu", ".gov", ".io", ".ai", ".cn", ".co", ".uk", ".de", ".jp", ".info")
_TLD = re.compile("|".join(map(re.escape, _TLDS)))  # one scan instead of one per domain
_DOMAIN = re.compile(rf"[\w-]+(?:\.[\w-]+)*(?:{_TLD.pattern})\b")
# Marks of a line of code: `=`, `<`, `>`, a brace, `\` or `|`, a call `name(`, a snake_case name, or a
# statement ending in ';'.
_CODE_LINE = re.compile(r"[=<>{}\\|]|\w\(|[^\W_]_\w|;\s*$")
_CODE_CHAR = re.compile(r"[=<>{}\\|(_;]")  # a line without one of these has no mark of code
# Quoted material: "..." “...” ‘...’ '...' 「...」 『...』 《...》; an apostrophe in a word opens nothing.
_QUOTED = re.compile(
    r"\"[^\"\n]*\"|“[^”\n]*”|‘[^’\n]*’|(?<!\w)'[^'\n]*'(?!\w)|「[^」\n]*」|『[^』\n]*』|《[^》\n]*》"
)
_QUOTE_MARK = re.compile("[\"“‘'「『《]")  # what opens a quote; most instructions have none
_TRANSLATION = ("translat", "翻译", "译成", "译为")
_CJK = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]")
_ASCII_LETTERS = string.ascii_letters.encode()


def prose(text: str) -> str:
    """The text without code spans, URLs, e-mail addresses and lines that look like code; nothing when
    half of its lines or more look like code, since some lines of a program have no mark of code
    ('FROM orders', 'else:')."""
    if "`" in text or "/" in text or "@" in text or "www." in text:
        text = _CODE_SPANS.sub(" ", text)
    if _TLD.search(text):
        text = _DOMAIN.sub(" ", text)
    lines = [line for line in text.split("\n") if line.strip()]
    kept = [line for line in lines if not _is_code(line)]
    return "\n".join(kept) if len(kept) * 2 > len(lines) else ""


def _is_code(line: str) -> bool:
    """Indented, or ASCII with a mark of code: a line that also has other letters is prose that
    mentions code ('你可以使用 np.array() 来创建数组')."""
    if line.startswith(("\t", "    ")):
        return True
    if not line.isascii() or not _CODE_CHAR.search(line):
        return False  # the common case, without the longer regular expression
    return _CODE_LINE.search(line) is not None


def quoted(text: str) -> list[str]:
    """The quoted spans of a text, quotes included."""
    return _QUOTED.findall(text)


def unquoted(text: str) -> str:
    """The text without its quoted spans: what an instruction says, not the material it quotes."""
    return _QUOTED.sub(" ", text) if _QUOTE_MARK.search(text) else text


def letter_weight(text: str) -> int:
    """Letters, each CJK character (ideograph, kana, hangul) counting as CJK_WEIGHT."""
    letters = sum(map(str.isalpha, text))
    return letters if text.isascii() else letters + (CJK_WEIGHT - 1) * len(_CJK.findall(text))


def enough_letters(text: str) -> bool:
    """letter_weight(text) >= MIN_LETTERS, without counting CJK characters when plain letters settle it."""
    if text.isascii():  # letters are A-Z and a-z: counted by deleting them, not one call per character
        return len(text) - len(text.encode().translate(None, _ASCII_LETTERS)) >= MIN_LETTERS
    if sum(map(str.isalpha, text[: 2 * MIN_LETTERS])) >= MIN_LETTERS:
        return True  # most prose has its letters in its first characters
    letters = sum(map(str.isalpha, text))
    if letters >= MIN_LETTERS or letters * CJK_WEIGHT < MIN_LETTERS:
        return letters >= MIN_LETTERS
    return letter_weight(text) >= MIN_LETTERS


class LanguageCheck:
    """Whether texts are in the run's language `lang` (an ISO 639-1 code py3langid knows).

    A text is kept unless the model is confident it is in another language; see the module
    docstring for what is judged. Loading the model takes about a second; a language py3langid does
    not know raises ValueError. `foreign_language` keeps its last 4,096 answers: the records of one
    task share their instruction, which is judged once.
    """

    def __init__(self, lang: str, candidates: Iterable[str] = CANDIDATES):
        self.lang = lang
        self.candidates = tuple(dict.fromkeys((lang, *candidates)))
        self._identifier = _identifier(tuple(sorted(self.candidates)))
        self._probabilities = _probabilities(self._identifier)
        # The model's columns whose label is the run's language or one of its varieties (the first
        # column of a label, which holds its probability).
        self._labels = self._identifier.nb_classes
        first: dict[str, int] = {}
        for n, label in enumerate(self._labels):
            first.setdefault(label, n)
        self._run_columns = [n for label, n in first.items() if _FOLD.get(label, label) == lang]
        self.foreign_language = lru_cache(maxsize=4096)(self._foreign_language)

    def _foreign_language(self, text: str) -> str | None:
        """The language the text is in when that is confidently not the run's language, else None:
        in the run's language, or too little prose to tell."""
        if len(text) * CJK_WEIGHT < MIN_LETTERS:
            return None
        sample = prose(text[:HEAD_CHARS])[:MAX_CHARS]
        if not enough_letters(sample):
            return None
        probabilities = self._probabilities(sample)
        # The run's share, its varieties added largest first as in py3langid's ranking, so that the
        # sum is the same float; most texts stop here, without ranking the languages.
        share = 0.0
        for p in sorted([probabilities[n] for n in self._run_columns], reverse=True):
            share += p
        if share >= MIN_SHARE:
            return None
        merged: dict[str, float] = {}  # rank(): one probability per label, best first
        for label, p in zip(self._labels, probabilities, strict=True):
            merged.setdefault(label, p)
        shares: dict[str, float] = {}
        for label, p in sorted(merged.items(), key=itemgetter(1), reverse=True):
            lang = _FOLD.get(label, label)
            shares[lang] = shares.get(lang, 0.0) + p
        return max(shares, key=shares.__getitem__)

    def is_in_language(self, text: str) -> bool:
        """True unless the text is confidently in another language."""
        return self.foreign_language(text) is None

    def record_reason(self, instruction: str, output: str, input: str = "") -> str | None:
        """`wrong_language` when the instruction (without what it quotes) or the output is in another
        language, else None.

        An output in another language is kept when the instruction asks for a translation or names
        that language ("into Spanish", "译成英文"), and when the material it works on, the input and
        what the instruction quotes, is in that language too (remove the vowels of an English
        sentence, tag its parts of speech).
        """
        if self.foreign_language(unquoted(instruction)):
            return WRONG_LANGUAGE
        found = self.foreign_language(output)
        if not found or asks_for(instruction, found):
            return None
        material = "\n".join([input, *quoted(instruction)])
        return None if self.foreign_language(material) == found else WRONG_LANGUAGE


def asks_for(instruction: str, lang: str) -> bool:
    """True when the instruction asks for a translation or names the language (in English or
    Chinese): 'Translate ...', 'in Spanish', '译成英文'."""
    low = instruction.lower()
    return any(word in low for word in _TRANSLATION) or any(
        name.lower() in low for name in LANGUAGE_NAMES.get(lang, ())
    )


@cache
def _identifier(candidates: tuple[str, ...]):
    """py3langid's model restricted to the candidates and their varieties, with probabilities."""
    import lzma
    from pathlib import Path

    import numpy as np
    from py3langid import modelio
    from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

    # py3langid's own loader unpacks the model (68 MB) into a temporary file; a run must not need
    # free disk space for that, so it is unpacked in memory here, into the same arrays.
    with lzma.open(Path(MODEL_DIR) / MODEL_FILE) as packed:
        unpacked = io.BytesIO(packed.read())
    with np.load(unpacked, allow_pickle=False) as data:
        identifier = LanguageIdentifier(
            np.asarray(data["ptc"]),
            np.asarray(data["pc"]),
            data["classes"].tolist(),
            modelio._to_array(data["nextmove"]),
            data["out_feat"].tolist(),
            norm_probs=True,
            tk_row=modelio._to_array(data["nextmove_row"]),
        )
    unknown = [c for c in candidates if c not in identifier.labels]
    if unknown:
        raise ValueError(f"py3langid does not identify {', '.join(unknown)}: use an ISO 639-1 code it knows")
    identifier.set_languages([v for c in candidates for v in (c, *_VARIETIES.get(c, ()))])
    return identifier


@cache
def _probabilities(identifier):
    """A function from a text to the probabilities `identifier.rank` ranks, one per column of the model,
    as a list: the steps of py3langid's `_decide`, with the same numpy operations in the same order, so
    the same floats, but the weights are widened once and no ranking is built. It reads private parts
    of py3langid 0.4 (pinned < 0.5): `_encode`, `_rowbase`, `_alias_pairs`, `_decide`, `visit_counts`."""
    import numpy as np
    from py3langid.langid import visit_counts

    if identifier._alias_pairs:  # labels in two columns (srl, sr): py3langid folds them itself
        return lambda text: identifier._decide(text).tolist()
    encode = identifier._encode
    nextmove, rowbase, output = identifier.tk_nextmove, identifier._rowbase, identifier.tk_output
    # The weights widened from float16 once rather than at each text: the product gets the same
    # float32 numbers (7.6 MB for the 19 columns).
    weights = np.ascontiguousarray(identifier.nb_ptc, dtype=np.float32)
    priors = identifier.nb_pc
    log1p, fromiter, exp, intp, float32 = np.log1p, np.fromiter, np.exp, np.intp, np.float32

    def probabilities(text: str) -> list[float]:
        data = encode(text)
        visits = visit_counts(nextmove, rowbase, output, data)
        if not visits:
            return identifier._decide(text).tolist()
        features = fromiter(visits, intp, len(visits))
        counts = fromiter(visits.values(), float32, len(visits))
        scores = log1p(counts) @ weights[features] + priors
        scores *= 1.0 / math.sqrt(len(data) or 1)
        exp(scores - scores.max(), out=scores)
        scores /= scores.sum()
        return scores.tolist()

    return probabilities
