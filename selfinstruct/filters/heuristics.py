"""Heuristic instruction filters (Self-Instruct §2.3, Alpaca), read from a declarative TOML file."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from selfinstruct.errors import UserError, first_error
from selfinstruct.filters.base import Decision
from selfinstruct.filters.tokenizers import CJK_CHAR, count_words
from selfinstruct.tasks import read_text, read_toml


class _Rules(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _not_blank(text: str) -> str:
    """A blank keyword or prefix is found in every instruction, and would reject them all."""
    if not text.strip():
        raise ValueError(f"{text!r} is blank and would reject every instruction — remove it")
    return text


NonBlank = Annotated[str, AfterValidator(_not_blank)]


class LengthRule(_Rules):
    min_words: int = Field(4, ge=0)
    max_words: int = Field(150, ge=1)

    @model_validator(mode="after")
    def _bounds_leave_room(self) -> LengthRule:
        if self.min_words > self.max_words:
            raise ValueError(
                f"min_words ({self.min_words}) is greater than max_words ({self.max_words}), "
                "which rejects every instruction — lower min_words or raise max_words"
            )
        return self


class KeywordRule(_Rules):
    files: list[str] = Field(default_factory=list)
    words: list[NonBlank] = Field(default_factory=list)


class PrefixRule(_Rules):
    reject: list[NonBlank] = Field(default_factory=list)


class PunctuationRule(_Rules):
    reject_leading: bool = True


class TextRule(_Rules):
    reject_garbled: bool = True
    min_letter_share: float = Field(0.3, ge=0, le=1)


class HeuristicRules(_Rules):
    length: LengthRule = Field(default_factory=LengthRule)
    keywords: KeywordRule = Field(default_factory=KeywordRule)
    prefixes: PrefixRule = Field(default_factory=PrefixRule)
    punctuation: PunctuationRule = Field(default_factory=PunctuationRule)
    text: TextRule = Field(default_factory=TextRule)


class HeuristicFilter:
    """Length bounds, keyword blacklist, bad prefixes and leading punctuation."""

    def __init__(self, rules: HeuristicRules, keywords: list[str]):
        self.rules = rules
        self.keywords = keywords
        # Whole keywords: no word character right before or after, so `c++`, `.net` and `node.js`
        # match while `image` does not match `imagery`. Chinese has no spaces between words, so a
        # CJK keyword matches anywhere.
        # The word boundaries are written once around all the other keywords, not around each: the
        # same matches, and the search no longer tries every keyword's look-behind at every position.
        words = "|".join(re.escape(k) for k in keywords if not CJK_CHAR.search(k))
        patterns = [re.escape(k) for k in keywords if CJK_CHAR.search(k)]
        if words:
            patterns.insert(0, rf"(?<!\w)(?:{words})(?!\w)")
        self._keyword_re = re.compile("|".join(patterns), re.IGNORECASE) if keywords else None

    @classmethod
    def from_file(cls, path: Path) -> HeuristicFilter:
        path = Path(path)
        data = read_toml(path, "filter rules not found — pass --filters with an existing TOML file")
        try:
            rules = HeuristicRules.model_validate(data)
        except ValidationError as exc:
            field, message = first_error(exc)
            raise UserError(f"{path}: {field}: {message}") from None
        keywords = list(rules.keywords.words)
        for name in rules.keywords.files:
            keywords += _read_keywords(path.parent / name, path)
        return cls(rules, keywords)

    def check(self, text: str) -> Decision:
        return Decision(self.reason(text))

    def reason(self, text: str) -> str | None:
        """None to keep the instruction, else the reason to drop it."""
        words = count_words(text)
        if words < self.rules.length.min_words:
            return "too_short"
        if words > self.rules.length.max_words:
            return "too_long"
        if self._keyword_re and self._keyword_re.search(text):
            return "blacklisted_keyword"
        if any(text.startswith(p) for p in self.rules.prefixes.reject):
            return "bad_prefix"
        if self.rules.punctuation.reject_leading and unicodedata.category(text[0]).startswith("P"):
            return "leading_punctuation"
        if self.rules.text.reject_garbled and _garbled(text, self.rules.text.min_letter_share):
            return "garbled"
        return None


def _garbled(text: str, min_letter_share: float) -> bool:
    """Control, unassigned or replacement characters (binary noise), or too few letters to be a
    sentence (a row of numbers or symbols)."""
    if text.isascii():  # the same test, without a Python step per character
        if _ASCII_CONTROL.search(text):
            return True
        return len(_ASCII_LETTERS.findall(text)) < min_letter_share * len(_ASCII_SPACE.sub("", text))
    chars = [ch for ch in text if not ch.isspace()]
    if any(ch == "\ufffd" or unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") for ch in chars):
        return True
    letters = sum(ch.isalpha() for ch in chars)
    return letters < min_letter_share * len(chars)


_ASCII_SPACE = re.compile(r"[ \t\n\r\x0b\x0c\x1c-\x1f]")  # str.isspace() in ASCII
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f]")  # category Cc, less the spaces
_ASCII_LETTERS = re.compile(r"[A-Za-z]")


def _read_keywords(path: Path, rules_path: Path) -> list[str]:
    try:
        text = read_text(path, "not found", "not UTF-8 text — a keyword file is UTF-8, one keyword a line")
    except UserError as exc:
        raise UserError(f"{rules_path}: keywords.files: {exc}") from None
    lines = text.splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
