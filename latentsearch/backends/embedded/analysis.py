"""Text analysis for the embedded engine: the built-in OpenSearch analyzers a mapping may name.

    standard  StandardTokenizer (Unicode word boundaries, UAX #29) + lowercase
    english   StandardTokenizer + English possessive filter + lowercase + English stop words
              (Lucene's EnglishAnalyzer set, OpenSearch's `_english_`) + Porter stemming
    simple    runs of letters, lowercased
    whitespace  split on whitespace, case kept

The tokenizer is a regular-expression reading of UAX #29's word rules (letters and digits join;
`.` `'` `’` `:` join letters, `.` `,` `;` `'` join digits; underscores join), which is what Lucene's
StandardTokenizer implements for Latin-script text. The stemmer is Lucene's `PorterStemmer` (Martin
Porter's reference C version: the published 1980 algorithm plus `-bli`→`-ble`, `-logi`→`-log`, and
words of one or two letters left alone). PyStemmer's `porter` is the Snowball transcription of the
*published* algorithm and stems 0.4% of SciFact's vocabulary differently (`technology`→`technologi`,
`is`→`i`, `us`→`u`), so it cannot give Lucene's tokens; this module carries the ~100 lines instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

# UAX #29 (as Lucene's StandardTokenizer): a word is letters/digits/underscores, and a single
# MidLetter/MidNumLet between two letters or a MidNum/MidNumLet between two digits does not break it.
_WORD_RE = re.compile(
    r"\w+(?:(?:(?<=[^\W\d_])[.'’:·](?=[^\W\d_])|(?<=\d)[.,;'’](?=\d))\w+)*",
    re.UNICODE,
)
_LETTERS_RE = re.compile(r"[^\W\d_]+", re.UNICODE)

#: Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET (= OpenSearch's `_english_` stop words).
ENGLISH_STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there "
    "these they this to was will with".split()
)
_POSSESSIVE = ("'s", "’s", "＇s", "'S", "’S", "＇S")


def standard_tokens(text: str) -> list[str]:
    """Lucene StandardTokenizer tokens (case kept)."""
    return _WORD_RE.findall(text)


def analyze_standard(text: str) -> list[str]:
    return [t.lower() for t in _WORD_RE.findall(text)]


def analyze_english(text: str) -> list[str]:
    out = []
    for tok in _WORD_RE.findall(text):
        if tok.endswith(_POSSESSIVE):  # EnglishPossessiveFilter runs before lowercasing
            tok = tok[:-2]
        tok = tok.lower()
        if not tok or tok in ENGLISH_STOP_WORDS:
            continue
        out.append(porter_stem(tok))
    return out


def analyze_simple(text: str) -> list[str]:
    return [t.lower() for t in _LETTERS_RE.findall(text)]


def analyze_whitespace(text: str) -> list[str]:
    return text.split()


ANALYZERS: dict[str, Callable[[str], list[str]]] = {
    "standard": analyze_standard,
    "english": analyze_english,
    "simple": analyze_simple,
    "whitespace": analyze_whitespace,
}
DEFAULT_ANALYZER = "standard"


def get_analyzer(name: str | None) -> Callable[[str], list[str]]:
    """The analyzer function for a mapping's `analyzer` name (None: `standard`, as OpenSearch)."""
    fn = ANALYZERS.get(name or DEFAULT_ANALYZER)
    if fn is None:
        raise ValueError(f"analyzer `{name}` is not available in the embedded engine; supported: {', '.join(ANALYZERS)}")
    return fn


def analyze(text: str, analyzer: str | None = None) -> list[str]:
    return get_analyzer(analyzer)(text)


# ---------------------------------------------------------------- Porter (Lucene's PorterStemmer)

_VOWELS = frozenset("aeiou")


class _Porter:
    """One word through Porter's steps; `b` is the buffer, `k` the last index, `j` a cut point."""

    __slots__ = ("b", "j", "k")

    def __init__(self, word: str):
        self.b = list(word)
        self.k = len(word) - 1
        self.j = 0

    def cons(self, i: int) -> bool:
        ch = self.b[i]
        if ch in _VOWELS:
            return False
        if ch == "y":
            return True if i == 0 else not self.cons(i - 1)
        return True

    def m(self) -> int:
        """Number of vowel-consonant sequences in b[0..j]."""
        n, i, j = 0, 0, self.j
        while True:
            if i > j:
                return n
            if not self.cons(i):
                break
            i += 1
        i += 1
        while True:
            while True:
                if i > j:
                    return n
                if self.cons(i):
                    break
                i += 1
            i += 1
            n += 1
            while True:
                if i > j:
                    return n
                if not self.cons(i):
                    break
                i += 1
            i += 1

    def vowel_in_stem(self) -> bool:
        return any(not self.cons(i) for i in range(self.j + 1))

    def double_c(self, j: int) -> bool:
        return j >= 1 and self.b[j] == self.b[j - 1] and self.cons(j)

    def cvc(self, i: int) -> bool:
        if i < 2 or not self.cons(i) or self.cons(i - 1) or not self.cons(i - 2):
            return False
        return self.b[i] not in "wxy"

    def ends(self, s: str) -> bool:
        n = len(s)
        o = self.k - n + 1
        if o < 0 or "".join(self.b[o : self.k + 1]) != s:
            return False
        self.j = self.k - n
        return True

    def setto(self, s: str) -> None:
        self.b[self.j + 1 :] = list(s)
        self.k = self.j + len(s)

    def r(self, s: str) -> None:
        if self.m() > 0:
            self.setto(s)

    def truncate(self) -> None:
        del self.b[self.k + 1 :]

    def step1(self) -> None:
        if self.b[self.k] == "s":
            if self.ends("sses"):
                self.k -= 2
            elif self.ends("ies"):
                self.setto("i")
            elif self.b[self.k - 1] != "s":
                self.k -= 1
        self.truncate()
        if self.ends("eed"):
            if self.m() > 0:
                self.k -= 1
        elif (self.ends("ed") or self.ends("ing")) and self.vowel_in_stem():
            self.k = self.j
            self.truncate()
            if self.ends("at"):
                self.setto("ate")
            elif self.ends("bl"):
                self.setto("ble")
            elif self.ends("iz"):
                self.setto("ize")
            elif self.double_c(self.k):
                if self.b[self.k] not in "lsz":
                    self.k -= 1
            elif self.m() == 1 and self.cvc(self.k):
                self.setto("e")
        self.truncate()

    def step2(self) -> None:
        if self.ends("y") and self.vowel_in_stem():
            self.b[self.k] = "i"

    _STEP3 = {
        "a": (("ational", "ate"), ("tional", "tion")),
        "c": (("enci", "ence"), ("anci", "ance")),
        "e": (("izer", "ize"),),
        "l": (("bli", "ble"), ("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous")),
        "o": (("ization", "ize"), ("ation", "ate"), ("ator", "ate")),
        "s": (("alism", "al"), ("iveness", "ive"), ("fulness", "ful"), ("ousness", "ous")),
        "t": (("aliti", "al"), ("iviti", "ive"), ("biliti", "ble")),
        "g": (("logi", "log"),),
    }
    _STEP4 = {
        "e": (("icate", "ic"), ("ative", ""), ("alize", "al")),
        "i": (("iciti", "ic"),),
        "l": (("ical", "ic"), ("ful", "")),
        "s": (("ness", ""),),
    }
    _STEP5 = {
        "a": ("al",), "c": ("ance", "ence"), "e": ("er",), "i": ("ic",), "l": ("able", "ible"),
        "n": ("ant", "ement", "ment", "ent"), "s": ("ism",), "t": ("ate", "iti"), "u": ("ous",),
        "v": ("ive",), "z": ("ize",),
    }

    def _replace(self, table: dict[str, tuple[tuple[str, str], ...]], key: str) -> None:
        for suffix, repl in table.get(key, ()):
            if self.ends(suffix):
                self.r(repl)
                self.truncate()
                return

    def step3(self) -> None:
        if self.k == 0:
            return
        self._replace(self._STEP3, self.b[self.k - 1])

    def step4(self) -> None:
        self._replace(self._STEP4, self.b[self.k])

    def step5(self) -> None:
        if self.k == 0:
            return
        key = self.b[self.k - 1]
        if key == "o":
            if not ((self.ends("ion") and self.j >= 0 and self.b[self.j] in "st") or self.ends("ou")):
                return
        elif not any(self.ends(s) for s in self._STEP5.get(key, ())):
            return
        if self.m() > 1:
            self.k = self.j
            self.truncate()

    def step6(self) -> None:
        self.j = self.k
        if self.b[self.k] == "e":
            a = self.m()
            if a > 1 or (a == 1 and not self.cvc(self.k - 1)):
                self.k -= 1
        if self.b[self.k] == "l" and self.double_c(self.k) and self.m() > 1:
            self.k -= 1
        self.truncate()

    def stem(self) -> str:
        if self.k > 1:  # words of one or two characters stay as they are
            self.step1()
            self.step2()
            self.step3()
            self.step4()
            self.step5()
            self.step6()
        return "".join(self.b[: self.k + 1])


@lru_cache(maxsize=200_000)
def porter_stem(word: str) -> str:
    """Lucene's PorterStemFilter on one lowercased token."""
    return _Porter(word).stem()
