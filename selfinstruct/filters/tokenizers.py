"""Tokenizers for ROUGE-L: rouge_score's own, and a Unicode-aware one for other scripts.

rouge_score lowercases and keeps runs of [a-z0-9], so Chinese, Japanese or Korean text has no tokens
at all and every pair scores 0. The Unicode tokenizer makes each CJK ideograph, kana and hangul
syllable a token and keeps runs of other letters, marks and digits as words, lowercased; on
pure-ASCII text it yields exactly rouge_score's tokens.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import regex

Tokenizer = Callable[[str], list[str]]

_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}"
_UNICODE_TOKEN = regex.compile(rf"[{_CJK}]|(?:(?![{_CJK}])[\p{{L}}\p{{M}}\p{{N}}])+")
_ROUGE_TOKEN = re.compile(r"[a-z0-9]+")
CJK_CHAR = regex.compile(rf"[{_CJK}]")


def count_words(text: str) -> int:
    """Whitespace-separated words, each CJK character counting as one (Chinese has no spaces)."""
    if text.isascii():
        return len(text.split())
    return len(CJK_CHAR.findall(text)) + len(CJK_CHAR.sub(" ", text).split())


def rouge_tokens(text: str) -> list[str]:
    """rouge_score's default tokens (no stemming): it lowercases, turns every run of characters
    other than [a-z0-9] into a space and splits, which leaves exactly the runs of [a-z0-9]."""
    return _ROUGE_TOKEN.findall(text.lower())


def unicode_tokens(text: str) -> list[str]:
    """CJK characters one token each; other letters, marks and digits as lowercased words."""
    if text.isascii():
        return _ROUGE_TOKEN.findall(text.lower())
    return _UNICODE_TOKEN.findall(text.lower())


TOKENIZERS: dict[str, Tokenizer] = {"rouge": rouge_tokens, "unicode": unicode_tokens}


def cjk_share(texts: list[str]) -> float:
    """The share of CJK characters among the letters of the texts."""
    letters = sum(sum(ch.isalpha() for ch in t) for t in texts)
    cjk = sum(len(CJK_CHAR.findall(t)) for t in texts)
    return cjk / letters if letters else 0.0


def detect_language(texts: list[str]) -> str:
    """'zh' when CJK characters make up most of the letters, else 'en'."""
    return "zh" if cjk_share(texts) > 0.3 else "en"


def default_tokenizer(texts: list[str]) -> str:
    """rouge_score's tokenizer (the reference decisions) for text in the Latin alphabet without
    accents; the Unicode one as soon as other letters matter."""
    letters = [ch for t in texts for ch in t if ch.isalpha()]
    other = sum(not ch.isascii() for ch in letters)
    return "unicode" if letters and other / len(letters) > 0.01 else "rouge"
