"""Stories: which stored items report one news event. Pure: signatures in, decisions out.

An item joins an open story (one first seen within the window, 72 h by default) when
  * it links the same article (canonical URL) or carries the same title (syndication);
  * its text nearly duplicates the story's (word-set Jaccard of title and summary); or
  * in any language, it names the same people and companies (at least two, most of
    them shared) and shares a topic: "AMC Networks signs with Runway" shares only
    Runway with "Lionsgate signs with Runway", and stays a story of its own.
Storage finds candidate stories through a few keys per story (link, title, names and
a bottom-k sketch of the words), so the cost per new item does not grow with the
number of stored items.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from monitor.classify.text import fold
from monitor.types import Item, Match

SKETCH = 8  # words kept per signature in the bottom-k sketch (candidate keys)


@dataclass(frozen=True, slots=True)
class StoryRules:
    window: timedelta = timedelta(hours=72)
    similarity: float = 0.5  # word-set Jaccard for near-duplicate text
    min_shared_entities: int = 2


@dataclass(frozen=True, slots=True)
class Signature:
    url: str | None
    title_key: str
    words: frozenset[str]
    entities: frozenset[str]
    topics: frozenset[str]
    title_entities: frozenset[str] = frozenset()  # the names the headline is about
    lead: str | None = None  # the headline's first name: whom the story is about
    numbers: frozenset[str] = frozenset()  # figures (20,000 titles; €600,000): any language

    def to_json(self) -> dict[str, object]:
        return {"url": self.url, "title_key": self.title_key, "words": sorted(self.words),
                "entities": sorted(self.entities), "topics": sorted(self.topics),
                "title_entities": sorted(self.title_entities), "lead": self.lead,
                "numbers": sorted(self.numbers)}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Signature:
        def words(key: str) -> frozenset[str]:
            value = data.get(key) or []
            return frozenset(str(v) for v in value) if isinstance(value, list) else frozenset()

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
        )


# Outlet suffixes syndication adds to titles: "… | Variety", "… - Deadline".
_SUFFIX = re.compile(r"\s+[|\-–—]\s+[^|\-–—]{2,40}$")
_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d[\d.,]*\d|\d")
# Capitalised names: a capital, then letters; joined by spaces/hyphens (SAG-AFTRA, Warner Bros).
_NAME = re.compile(r"\b[A-ZÀ-Ý][\w&]*(?:[ \-][A-ZÀ-Ý][\w&]*)*")
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


def title_key(title: str) -> str:
    """A title as syndication repeats it: outlet suffix, case, accents and punctuation gone."""
    core = _SUFFIX.sub("", title.strip())
    return " ".join(_WORD.findall(fold(core)[0]))


def _words(text: str) -> frozenset[str]:
    return frozenset(w for w in _WORD.findall(fold(text)[0]) if len(w) > 2 and w not in _FILLER)


def entities(title: str, summary: str) -> frozenset[str]:
    """Names (runs of capitalised words) in the item, folded. A Headline Case title
    capitalises everything, so only the summary's names count then. One capitalised
    word opening a sentence counts only if it is capitalised mid-sentence somewhere too."""
    texts = [summary]
    words = title.split()
    capitalised = sum(1 for w in words if w[:1].isupper())
    if not (len(words) >= 4 and capitalised / len(words) > 0.6):
        texts.append(title)
    found: list[tuple[str, bool]] = []  # (name, opens a sentence)
    for text in texts:
        for m in _NAME.finditer(text):
            name = fold(m.group())[0].replace("-", " ").strip()
            parts = [p for p in name.split() if p not in _NOT_NAMES]
            if parts and len("".join(parts)) > 1:
                opener = m.start() == 0 or text[: m.start()].rstrip()[-1:] in ".!?:«\"'"
                found.append((" ".join(parts), opener and len(parts) == 1))
    # an opener is a name if it is capitalised mid-sentence elsewhere, or the title has it
    confirmed = {n for n, opener in found if not opener} | set(_WORD.findall(fold(title)[0]))
    return frozenset(n for n, opener in found if not opener or n in confirmed)


def signature(item: Item, matches: Sequence[Match], gate: str | None = None) -> Signature:
    # Names the topic rules recognised (watchlist entities such as Lionsgate or Runway,
    # wherever they were written) count as names too.
    recognised = {
        fold(t)[0] for m in matches for t in m.terms
        if t[:1].isupper() and fold(t)[0] not in _NOT_NAMES and not t.endswith("*")
    }  # fmt: skip
    names = entities(item.title, item.summary) | recognised
    title = f" {' '.join(_WORD.findall(fold(item.title)[0]))} "
    in_title = {n: title.find(f" {' '.join(_WORD.findall(n))} ") for n in names}
    in_title = {n: at for n, at in in_title.items() if at >= 0}
    lead = min(in_title, key=lambda n: (in_title[n], -len(n))) if in_title else None
    numbers = frozenset(
        digits for m in _NUMBER.finditer(f"{item.title} {item.summary}")
        if len(digits := re.sub(r"\D", "", m.group())) >= 2
    )  # fmt: skip
    return Signature(
        url=item.url,
        title_key=title_key(item.title),
        words=_words(f"{item.title} {item.summary}"),
        entities=names,
        topics=frozenset(m.topic for m in matches if m.topic != gate),
        title_entities=frozenset(in_title),
        lead=lead,
        numbers=numbers,
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


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def same_story(new: Signature, story: Signature, rules: StoryRules) -> tuple[str, bool] | None:
    """Why `new` reports the story's event, and whether it is an exact duplicate
    (a syndicated copy: counted, never alerted again); None when it does not."""
    if new.url and new.url == story.url:
        return "same link", True
    if new.title_key and new.title_key == story.title_key:
        return "same title", True
    shared = new.entities & story.entities
    smaller = min(len(new.entities), len(story.entities))
    # share of the shorter list of names that both reports name: German capitalises
    # every noun, so a German report lists many "names"; the shared ones decide
    names = len(shared) / smaller if smaller else 0.0
    # the same words about different names are look-alike events ("Sony sues Udio",
    # "Universal sues Suno"), not one story
    other_names = smaller >= 2 and names < 0.25
    text = _jaccard(new.words, story.words)
    if text >= rules.similarity and not other_names:
        return f"near-duplicate text ({text:.2f})", False
    # whom each headline is about must be named by the other: "AMC Networks signs with
    # Runway, a day after Lionsgate" names both studios, but it is about AMC
    headlines_agree = (
        new.lead is None or story.lead is None
        or (new.lead in story.entities and story.lead in new.entities)
    )  # fmt: skip
    topics_agree = not new.topics or not story.topics or bool(new.topics & story.topics)
    if not (headlines_agree and topics_agree):
        return None
    leads_shared = new.lead in shared and story.lead in shared
    if len(shared) >= rules.min_shared_entities and (names >= 0.5 or leads_shared):
        return f"same names ({', '.join(sorted(shared))})", False
    figures = new.numbers & story.numbers
    if shared and new.lead is not None and new.lead == story.lead and figures:
        return f"same name and figures ({new.lead}; {', '.join(sorted(figures))})", False
    return None


def best_story(
    new: Signature, candidates: Iterable[tuple[int, Signature]], rules: StoryRules
) -> tuple[int, str, bool] | None:
    """The candidate story `new` belongs to: exact duplicates first, then the closest text."""
    best: tuple[float, int, str, bool] | None = None
    for story_id, sig in candidates:
        verdict = same_story(new, sig, rules)
        if verdict is None:
            continue
        reason, exact = verdict
        rank = 2.0 if exact else 1.0 + _jaccard(new.words, sig.words)
        if best is None or rank > best[0]:
            best = (rank, story_id, reason, exact)
    return None if best is None else best[1:]
