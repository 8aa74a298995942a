"""Stories: which stored items report one news event. Pure: signatures in, decisions out.

An item joins an open story (one first seen within the window, 72 h by default) when
  * it links the same article (canonical URL) or carries the same title (syndication);
  * its text nearly duplicates the story's (word-set Jaccard of title and summary); or
  * in any language, it names the same people and companies (at least two, most of
    them shared) and shares a topic: "AMC Networks signs with Runway" shares only
    Runway with "Lionsgate signs with Runway", and stays a story of its own; or
  * it shares a name and two figures, one of them telling (95.04% and 15.17%).
Each headline's lead (whom it is about) must be named by the other report, unless
nearly all its names are. Names match word for word inside longer forms ("Universal
Music" in "Universal Music Group"); German capitalises every noun, so there a plain
single word is only a weak name.
Storage finds candidate stories through a few keys per story (link, title, names and
a bottom-k sketch of the words), so the cost per new item does not grow with the
number of stored items.
"""

from __future__ import annotations

import contextlib
import hashlib
import operator
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta

from monitor.classify.text import fold, guess_language
from monitor.types import Item, Match

SKETCH = 8  # words kept per signature in the bottom-k sketch (candidate keys)


@dataclass(frozen=True, slots=True)
class StoryRules:
    window: timedelta = timedelta(hours=72)
    similarity: float = 0.5  # word-set Jaccard for near-duplicate text
    min_shared_entities: int = 2


# A new item's words and names are sets; a kept signature's are sorted tuples of the
# strings every kept signature shares: a comparison reads one of the two as a set, and
# a 150-word set takes 8 KB, its tuple 1.2 (the story cache holds thousands of them).
Words = frozenset[str] | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Signature:
    url: str | None
    title_key: str
    words: Words
    entities: Words
    topics: Words
    title_entities: Words = frozenset()  # the names the headline is about
    lead: str | None = None  # the headline's first name: whom the story is about
    numbers: Words = frozenset()  # figures (20,000 titles; €600,000): any language
    # maybe names, never a lead: German nouns, a sentence's unconfirmed first word
    weak: Words = frozenset()
    # its names arranged for comparing, made on its first comparison and kept by a new
    # item's signature (compared with every candidate); a story's kept signatures make
    # them again each time (kept, they took a third of the story cache's memory); not
    # stored (to_json), and pickled only fresh (workers send them before any comparison)
    _names: _Names | None = field(default=None, init=False, repr=False, compare=False)

    def names(self) -> _Names:
        if self._names is None:
            names = _Names(self.entities, self.weak)
            if isinstance(self.words, frozenset):  # a new item's, not kept()
                object.__setattr__(self, "_names", names)
            return names
        return self._names

    def to_json(self) -> dict[str, object]:
        return {"url": self.url, "title_key": self.title_key, "words": sorted(self.words),
                "entities": sorted(self.entities), "topics": sorted(self.topics),
                "title_entities": sorted(self.title_entities), "lead": self.lead,
                "numbers": sorted(self.numbers), "weak": sorted(self.weak)}  # fmt: skip

    def interned(self) -> Signature:
        """The same signature, its words the strings kept signatures share (a set finds
        an interned string by identity, not by comparing it)."""
        return replace(
            self, words=_interned(self.words), entities=_interned(self.entities),
            title_entities=_interned(self.title_entities), weak=_interned(self.weak),
        )  # fmt: skip

    def kept(self) -> Signature:
        """The same signature as a story keeps it in memory, as from_json reads it: its
        words and names sorted tuples of the strings every kept signature shares (a
        story's reports repeat most of each other's)."""
        kept = replace(
            self, words=_kept(self.words), entities=_kept(self.entities),
            topics=_kept(self.topics), title_entities=_kept(self.title_entities),
            numbers=_kept(self.numbers), weak=_kept(self.weak),
        )  # fmt: skip
        return kept

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Signature:
        def words(key: str) -> tuple[str, ...]:
            value = data.get(key) or []
            if not isinstance(value, list):
                return ()
            # as to_json writes them (sorted sets of strings, so each greater than the
            # last): kept as they are, checked in C (a story read back is ten signatures,
            # and storage reads back thousands of stories in a cold poll of many feeds)
            with contextlib.suppress(TypeError):  # a value that is no string
                kept = tuple(map(sys.intern, value))
                if all(map(operator.lt, kept, kept[1:])):
                    return kept
            return _kept(str(v) for v in value)  # kept: see Signature.kept

        url = data.get("url")
        return cls(
            url if isinstance(url, str) else None,
            str(data.get("title_key") or ""),
            words("words"),
            words("entities"),
            words("topics"),
            words("title_entities"),
            str(data["lead"]) if data.get("lead") else None,
            words("numbers"),
            words("weak"),
        )


def _interned(words: Words) -> frozenset[str]:
    return frozenset(map(sys.intern, words))


def _kept(words: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(map(sys.intern, words))))


def _common(a: Words, b: Words) -> frozenset[str]:
    """What two signatures' sets or kept tuples share (the set, if either is one, looks up)."""
    if isinstance(a, tuple):
        a, b = (b, a) if isinstance(b, frozenset) else (frozenset(a), b)
    return a.intersection(b)


# Outlet suffixes syndication adds to titles: "… | Variety", "… - Deadline".
_SUFFIX = re.compile(r"\s+[|\-–—]\s+[^|\-–—]{2,40}$")
_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d[\d.,]*\d|\d")
# Capitalised names: a capital, then letters; joined by spaces/hyphens (SAG-AFTRA, Warner Bros).
_NAME = re.compile(r"\b[A-ZÀ-Ý][\w&]*(?:[ \-][A-ZÀ-Ý][\w&]*)*")
_NAME_WORD = re.compile(r"[^ \-]+")
_FILLER = frozenset(
    "the and for with from that this have will into over after about their says said what "
    "when more than also its his her new nuovo nuova della delle dello degli sulla nella "
    "con per una uno che non sono come anche del los las una por para con que del como "
    "pero sus más les des une pour avec dans sur est qui que par plus der die das und "
    "mit für von den dem ein eine nicht auf ist sich".split()
)
# Capitalised words that are not names (sentence openers, generic acronyms).
_NOT_NAMES = frozenset(
    "the a an in on at for with after as how why what when new this that its it is "
    "ai a.i ia ki tv ceo us uk eu un exclusive watch review il lo la le gli i un una "
    "hollywood europe europa america italy italia france germany deutschland spain espana "
    "el los las les des der die das ein eine".split()
)

# Capitalised only because they open a sentence: "Anche AMC Networks", "Avec Sora",
# "Laut Landgericht München", "Unlike Lionsgate".
_LEADING = frozenset(
    "also and but even unlike like after before since until while with without from by to "
    "of anche ma dopo prima con senza per tra fra secondo mentre "
    "tambien pero tras antes desde segun con sin entre mientras "
    "aussi mais apres avant depuis selon avec sans pour chez entre pendant en au aux du de "
    "auch aber nach vor seit laut mit ohne bei von zu gegen trotz wegen wahrend".split()
)


def title_key(title: str) -> str:
    """A title as syndication repeats it: outlet suffix, case, accents and punctuation gone."""
    core = _SUFFIX.sub("", title.strip())
    return " ".join(_WORD.findall(fold(core)[0]))


def story_words(text: str) -> frozenset[str]:
    """The words of a text that say which story it tells: folded, fillers left out."""
    return frozenset(w for w in _WORD.findall(fold(text)[0]) if len(w) > 2 and w not in _FILLER)


def _headline_case(title: str) -> bool:
    """Headline Case capitalises every word but short function words ("Lionsgate Strikes
    Deal With Runway to Train…"); German capitalises nouns and leaves verbs lower-case
    ("Frankreich: CNC knüpft Förderung an KI-Transparenz")."""
    words = title.split()
    capitalised = sum(1 for w in words if w[:1].isupper())
    long_lower = any(w[:1].islower() and len(w) > 4 for w in words)
    return len(words) >= 4 and capitalised / len(words) > 0.6 and not long_lower


def _marked(word: str) -> bool:
    """A capital or a digit after the first letter (GEMA, OpenAI, YouTube): a name in
    any language, where German capitalises every noun."""
    return any(c.isupper() or c.isdigit() for c in word[1:])


@dataclass(frozen=True, slots=True)
class _Name:
    name: str  # folded, words joined by single spaces
    start: int  # where it starts in its text
    end: int
    opener: bool  # a single word opening a sentence: may be any word
    strong: bool  # a name even in German: marked, recognised or several words


def _find_names(text: str, recognised: set[str]) -> list[_Name]:
    out = []
    folded_text = fold(text)[0]  # a character for a character: each word's fold is a slice
    for m in _NAME.finditer(text):
        written = m.group()
        if " " in written or "-" in written:
            kept = []  # (folded, as written, where, the separator after it)
            for w in _NAME_WORD.finditer(written):
                at = m.start() + w.start()
                folded = folded_text[at : at + len(w.group())]
                if not kept and folded in _LEADING:  # "Anche AMC Networks", "Avec Sora"
                    continue
                if folded not in _NOT_NAMES:
                    sep = written[w.end() : w.end() + 1]  # a hyphen joins one word: KI-Stimme
                    kept.append((folded, w.group(), at, sep))
        else:  # one word, most names: the same, without the walk through its words
            folded = folded_text[m.start() : m.end()]
            if folded in _LEADING or folded in _NOT_NAMES:
                continue
            kept = [(folded, written, m.start(), "")]
        if not kept or len("".join(k[0] for k in kept)) < 2:
            continue
        name = " ".join(k[0] for k in kept)
        start = kept[0][2]
        spaced = any(k[3] == " " for k in kept[:-1])  # "Darth Vader", not "KI-Stimme"
        strong = spaced or any(_marked(k[1]) for k in kept) or name in recognised
        # a quoted name opens a sentence only if the quote does: « Teammates » does not
        opener = len(kept) == 1 and not strong and _opens_sentence(text, start)
        out.append(_Name(name, start, m.end(), opener, strong))
    return out


def _opens_sentence(text: str, start: int) -> bool:
    """Whether text[start:] opens a sentence: nothing before it but spaces and quotes,
    or a sentence's end. Read from a window before it, widened only if that is all
    spaces and quotes."""
    window = 32
    while True:
        low = max(0, start - window)
        before = text[low:start].rstrip().rstrip("«\"'‘“#").rstrip()
        if before or low == 0:
            return not before or before[-1] in ".!?:"
        window *= 4


def _names(
    title: str, summary: str, recognised: set[str], language: str | None
) -> tuple[list[_Name], frozenset[str], frozenset[str]]:
    """(the title's names in order, names, weak names) of an item, folded. A Headline
    Case title capitalises everything, so only the summary's names count then. A single
    word opening a sentence counts only if it is capitalised mid-sentence too, recognised
    by the topic rules, marked (GEMA), or a headline's kicker ("Agcom, arriva…"). German
    capitalises every noun: there a single plain word is only a weak name, shared when
    another report names it but never whom a headline is about."""
    in_summary = _find_names(summary, recognised)
    in_title = [] if _headline_case(title) else _find_names(title, recognised)
    mid_sentence = {n.name for n in in_summary + in_title if not n.opener} | recognised
    # a summary's opener the title capitalises too: "Lionsgate has signed…"
    title_words = {fold(w)[0] for w in _WORD.findall(title) if w[:1].isupper()}
    summary_names = {n.name for n in in_summary}
    kept_title = [
        n
        for n in in_title
        if not n.opener or n.name in mid_sentence or n.name in summary_names
        or title[n.end :].lstrip()[:1] in ",:"
    ]  # fmt: skip
    kept = kept_title + [
        n for n in in_summary if not n.opener or n.name in mid_sentence or n.name in title_words
    ]
    names = {n.name for n in kept} | recognised
    # an unconfirmed opener may still be a name ("Microsoft says…"): weak, like German nouns
    weak = {n.name for n in in_summary + in_title} - names
    if language == "de":
        weak |= names - ({n.name for n in kept if n.strong} | recognised)
        names -= weak
    return kept_title, frozenset(names), frozenset(weak)


def _lead(title: str, kept_title: list[_Name], names: frozenset[str]) -> str | None:
    """Whom the headline is about: its first name. A kicker ("Germania, la GEMA vince…",
    "Landgericht München: GEMA gewinnt…") tags the place or the topic; the name after it
    is the subject."""
    folded = f" {' '.join(_WORD.findall(fold(title)[0]))} "
    at = {n: folded.find(f" {' '.join(_WORD.findall(n))} ") for n in names}
    ordered = sorted((pos, -len(n), n) for n, pos in at.items() if pos >= 0)
    if not ordered:
        return None
    lead = ordered[0][2]
    kicker = next((n for n in kept_title if n.name == lead), None)
    if kicker is not None and title[kicker.end :].lstrip()[:1] in ",:" and len(ordered) > 1:
        later = [n for pos, _, n in ordered if pos > ordered[0][0] and n not in lead]
        if later:
            return later[0]
    return lead


def signature(item: Item, matches: Sequence[Match], gate: str | None = None) -> Signature:
    # Names the topic rules recognised (watchlist entities such as Lionsgate or Runway,
    # wherever they were written) count as names too.
    recognised = {
        fold(t)[0] for m in matches for t in m.terms
        if t[:1].isupper() and fold(t)[0] not in _NOT_NAMES and not t.endswith("*")
    }  # fmt: skip
    text = f"{item.title} {item.summary}"
    language = item.language or guess_language(text)
    kept_title, names, weak = _names(item.title, item.summary, recognised, language)
    lead = _lead(item.title, kept_title, names)
    title = f" {' '.join(_WORD.findall(fold(item.title)[0]))} "
    in_title = {n for n in names if f" {' '.join(_WORD.findall(n))} " in title}
    numbers = frozenset(
        digits for m in _NUMBER.finditer(text) if len(digits := re.sub(r"\D", "", m.group())) >= 2
    )  # fmt: skip
    return Signature(
        url=item.url,
        title_key=title_key(item.title),
        words=story_words(text),
        entities=names,
        topics=frozenset(m.topic for m in matches if m.topic != gate),
        title_entities=frozenset(in_title),
        lead=lead,
        numbers=numbers,
        weak=weak,
    )


def _hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")


def keys(sig: Signature) -> set[str]:
    """Index keys under which a story is found: two items of one story share at least one."""
    out = {f"t:{sig.title_key}"} if sig.title_key else set()
    if sig.url:
        out.add(f"u:{sig.url}")
    out.update(f"e:{e}" for e in sig.entities)
    # bottom-k sketch: near-duplicate texts share most of their lowest-hashed words
    out.update(f"w:{w}" for w in sorted(sig.words, key=_hash)[:SKETCH])
    return out


def _jaccard(a: Words, b: Words) -> float:
    if not a or not b:
        return 0.0
    shared = len(_common(a, b))
    return shared / (len(a) + len(b) - shared)


class _Names:
    """A signature's names as comparisons read them: found through their words. Kept
    small and quick to make (a story's kept signatures make theirs on each comparison):
    the names and words are the signature's own strings, a word of one name maps to that
    name itself, and the weak names are the signature's own."""

    __slots__ = ("by_word", "weak", "weak_words")

    def __init__(self, entities: Words, weak: Words):
        by_word: dict[str, str | tuple[str, ...]] = {}
        for name in entities:
            for word in dict.fromkeys(name.split()):
                had = by_word.get(word)
                by_word[sys.intern(word)] = name if had is None else (*_each(had), name)
        self.by_word = by_word
        # the words of weak names that no name has (None without: most signatures)
        extra = {w for n in weak for w in n.split()} - by_word.keys()
        self.weak_words = frozenset(extra) if extra else None
        self.weak = weak


def _each(names: str | tuple[str, ...]) -> tuple[str, ...]:
    return (names,) if isinstance(names, str) else names


def _named(name: str, names: _Names) -> bool:
    """Whether names hold name, or a name containing it or contained in it, word for word
    ("Universal Music" and "Universal Music Group", "VDS" and "Sprecherverband VDS"), or
    its weak names hold it exactly (a German noun is no part of a longer name)."""
    a = f" {name} "
    for word in name.split():
        # one padded name inside another shares its words: only those are read
        for other in _each(names.by_word.get(word, ())):
            b = f" {other} "
            if a in b or b in a:
                return True
    return name in names.weak


def _named_by(names: _Names, other: _Names) -> set[str]:
    """The names of `names` that `other` names (see _named): only a name sharing a word
    with the other's names can be."""
    mine = names.by_word.keys()
    common = mine & other.by_word.keys()
    if other.weak_words is not None:
        common |= mine & other.weak_words
    if not common:
        return set()
    maybe = {name for word in common for name in _each(names.by_word[word])}
    return {name for name in maybe if _named(name, other)}


def _figures(numbers: frozenset[str]) -> frozenset[str]:
    """Figures that tell events apart: three digits or more and not a year (2027)."""
    return frozenset(n for n in numbers if len(n) >= 3 and not re.fullmatch(r"(19|20)\d\d", n))


def same_story(new: Signature, story: Signature, rules: StoryRules) -> tuple[str, bool] | None:
    """Why `new` reports the story's event, and whether it is an exact duplicate
    (a syndicated copy: counted, never alerted again); None when it does not."""
    exact = _exact(new, story)
    if exact:
        return exact, True
    reason = _same_event(new, story, rules, _jaccard(new.words, story.words))
    return None if reason is None else (reason, False)


def _exact(new: Signature, story: Signature) -> str | None:
    if new.url and new.url == story.url:
        return "same link"
    if new.title_key and new.title_key == story.title_key:
        return "same title"
    return None


def _same_event(new: Signature, story: Signature, rules: StoryRules, text: float) -> str | None:
    """same_story's verdict for a report that is no exact copy; text: the words' Jaccard."""
    topics_agree = not new.topics or not story.topics or bool(_common(new.topics, story.topics))
    if text < rules.similarity and not topics_agree:
        return None  # what follows needs near-duplicate text or a topic in common
    # a name is shared when the other report names it, perhaps in a longer or shorter
    # form, or as one of the capitalised German nouns
    new_names, story_names = new.names(), story.names()
    shared = _named_by(new_names, story_names)
    shared_back = _named_by(story_names, new_names)
    count = max(len(shared), len(shared_back))
    smaller = min(len(new.entities), len(story.entities))
    # share of the shorter list of names that both reports name
    names = min(1.0, count / smaller) if smaller else 0.0
    # the same words about different names are look-alike events ("Sony sues Udio",
    # "Universal sues Suno"), not one story
    other_names = smaller >= 2 and names < 0.25
    if text >= rules.similarity and not other_names:
        return f"near-duplicate text ({text:.2f})"
    # whom each headline is about must be named by the other: "AMC Networks signs with
    # Runway, a day after Lionsgate" names both studios, but it is about AMC
    new_lead_named = new.lead is None or _named(new.lead, story_names)
    story_lead_named = story.lead is None or _named(story.lead, new_names)
    if not topics_agree:
        return None
    figures = _common(new.numbers, story.numbers)
    # two figures, one of them telling (95.04% and 15.17%; 2027 and €600,000), and a
    # name: the same event, whichever name each headline opens with
    if count and len(figures) >= 2 and _figures(figures) and (new_lead_named or story_lead_named):
        return f"same name and figures ({', '.join(sorted(figures))})"
    # a headline may lead with a name the other report does not know (spelt otherwise:
    # "Darth Vader", "Dark Vador") if the other knows nearly all its names, three at
    # least; a report that recalls another event ("hours after UMG sued Suno, Sony…")
    # names much that the other does not
    leads = new.lead is not None and story.lead is not None  # else nothing to agree on
    lead_unknown = leads and not (new_lead_named and story_lead_named)
    if lead_unknown:
        if not (new_lead_named or story_lead_named):
            return None
        side, known = (story, shared_back) if new_lead_named else (new, shared)
        if not (len(known) >= 3 and 4 * len(known) >= 3 * len(side.entities)):
            return None
    leads_shared = leads and not lead_unknown
    if count >= rules.min_shared_entities and (names >= 0.5 or leads_shared):
        return f"same names ({', '.join(sorted(shared | shared_back))})"
    if count and leads_shared and figures:
        return f"same name and figures ({new.lead}; {', '.join(sorted(figures))})"
    return None


def best_story(
    new: Signature, candidates: Iterable[tuple[int, Signature]], rules: StoryRules
) -> tuple[int, str, bool] | None:
    """The candidate story `new` belongs to: an exact duplicate (the first found), else
    the one of closest text among those it reports (the first found of equal text). An
    identical text found before an exact duplicate ranks level with it, and first.

    The texts are compared first, and the full verdict read closest first: the first
    candidate it accepts is the answer, and most reports need one or two verdicts, not
    one per candidate."""
    candidates = list(candidates)
    exact = next(
        ((i, why) for i, (_, sig) in enumerate(candidates) if (why := _exact(new, sig))), None
    )
    before = candidates if exact is None else candidates[: exact[0]]
    texts = [_jaccard(new.words, sig.words) for _, sig in before]
    for i in sorted(range(len(before)), key=lambda i: (-(1.0 + texts[i]), i)):
        if exact is not None and 1.0 + texts[i] < 2.0:
            break  # below an exact duplicate's rank
        story_id, sig = before[i]
        reason = _same_event(new, sig, rules, texts[i])
        if reason is not None:
            return story_id, reason, False
    if exact is not None:
        return candidates[exact[0]][0], exact[1], True
    return None
