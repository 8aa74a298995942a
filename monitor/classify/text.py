"""Text for matching: accents folded one character for one character, and a cheap language guess.

Folding keeps offsets: folded[i] comes from text[i], so a hit found in the
lower-cased fold can be checked against the case-preserving fold at the same
place (for case-sensitive acronyms such as AI) and reported at its position.
"""

from __future__ import annotations

import re
import unicodedata

# Dashes join words ("AI-generated", "SAG-AFTRA"): fold them (and every kind of
# space) to a plain space so a term written with a space or a dash matches either way.
_DASHES = "-\u2010\u2011\u2012\u2013\u2014\u2015\u2212_"
# Apostrophes too: "diritto d'autore" and "l'IA" match the terms "diritto d autore"
# and "IA" however the outlet typed its apostrophe (' or ’).
_APOSTROPHES = "'\u2019\u2018\u02bc\u00b4`"


class _FoldTable(dict):
    """str.translate table computed on first sight of each character."""

    def __init__(self, lower: bool):
        super().__init__()
        self.lower = lower

    def __missing__(self, code: int) -> str:
        ch = chr(code)
        if ch in _DASHES or ch in _APOSTROPHES or ch.isspace():
            out = " "
        else:
            base = unicodedata.normalize("NFD", ch)[0]
            out = base
            if self.lower:
                low = base.lower()
                out = low if len(low) == 1 else base
            if ch in "ßẞ":  # no one-character fold; keep it, terms fold the same way
                out = "ß" if self.lower else ch
        self[code] = out
        return out


_LOWER = _FoldTable(lower=True)
_CASED = _FoldTable(lower=False)
_ASCII_DASHES = str.maketrans(dict.fromkeys("-_'`\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f", " "))


# Latin-1 text (most European text: é, ü, ñ, « ») folds as bytes, through a table of
# 256, in C: a regex callback per character costs more than the whole translation. The
# characters beyond Latin-1 (curly quotes, dashes, …, €) split the text and fold one by
# one in between.
_LATIN1_CASED = bytes(ord(_CASED[code]) for code in range(256))
_BEYOND_LATIN1 = re.compile(r"([^\x00-\xff])")


def _fold_latin1(text: str) -> str:
    return text.encode("latin-1").translate(_LATIN1_CASED).decode("latin-1")


def fold(text: str) -> tuple[str, str]:
    """(lower-cased fold, case-preserving fold) of text, both as long as text."""
    if text.isascii():
        cased = text.translate(_ASCII_DASHES)
        return cased.lower(), cased
    pieces = _BEYOND_LATIN1.split(text)  # Latin-1, a character beyond, Latin-1, ...
    pieces[0::2] = map(_fold_latin1, pieces[0::2])
    pieces[1::2] = [_CASED[ord(c)] for c in pieces[1::2]]
    cased = "".join(pieces)
    lower = cased.lower()
    if len(lower) == len(cased) and "\u03a3" not in cased:  # no 1:n lower case, no Σ
        return lower, cased
    return text.translate(_LOWER), text.translate(_CASED)


_WORD = re.compile(r"\w+")

_STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        "the of and to in is for on with that this from by at as are its his her "
        "their was will has have be an new after how why".split()
    ),
    "it": frozenset(
        "il lo gli della delle degli dello nel nella nei per con che una uno del "
        "alla alle sono non più anche come dopo sul sulla tra dei è".split()
    ),
    "es": frozenset(
        "el los las del por para con una que en se su sus es más como pero sobre "
        "tras entre al lo y ha son fue está".split()
    ),
    "fr": frozenset(
        "le les des du une pour dans sur avec que qui est au aux par pas ce cette "
        "son ses plus et sont être après entre".split()
    ),
    "de": frozenset(
        "der die das und ist mit den dem des ein eine einer für auf nicht von zu "
        "im bei sich auch wird nach über aus wie".split()
    ),
}


# word -> the languages it is a stopword of: one dict lookup per word
_STOPWORD_LANGS: dict[str, tuple[str, ...]] = {}
for _lang, _words in _STOPWORDS.items():
    for _w in _words:
        _STOPWORD_LANGS[_w] = (*_STOPWORD_LANGS.get(_w, ()), _lang)


def guess_language(text: str) -> str | None:
    """en, it, es, fr or de by counting stopwords; None unless the text clearly says."""
    counts = dict.fromkeys(_STOPWORDS, 0)
    lookup = _STOPWORD_LANGS.get
    # about 100 words: enough to tell five languages apart (a third of them are stopwords)
    for word in _WORD.findall(text[:600].lower()):
        for lang in lookup(word, ()):
            counts[lang] += 1
    ranked = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)
    (best, n1), (_, n2) = ranked[0], ranked[1]
    if n1 >= 3 and n1 >= 2 * n2:
        return best
    return None
