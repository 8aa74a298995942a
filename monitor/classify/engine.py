"""Compile topic rules into one matcher and run it over items. Pure.

Every term of every topic and watchlist goes into one Aho-Corasick automaton
over accent-folded, lower-cased text, so the cost per item does not grow with
the number of terms; a hit is kept when it sits on word boundaries (and, for
acronyms, has the right case), then each topic's query is evaluated over hits.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import ahocorasick

from monitor.classify.query import (
    And,
    Field,
    Near,
    Node,
    Not,
    Or,
    QueryError,
    Term,
    TopicRef,
    Watch,
    height,
    parse_query,
    references,
    walk,
)
from monitor.classify.text import fold
from monitor.types import Item, Match

FIELD_NAMES = ("title", "summary", "category")
FIELD_WEIGHT = (2.0, 1.0, 1.0)  # a term in the title counts double
ALL = "all"  # the language key of queries that apply to every language
# levels of queries and the topics they refer to, all told: evaluating recurses through
# them, two or three Python frames a level (the parser bounds a query alone: 50)
_MAX_LEVELS = 200


@dataclass(frozen=True, slots=True)
class TopicRule:
    id: str
    label: str
    queries: tuple[tuple[str, str], ...]  # (language or "all", query text)
    min_score: float = 0.0
    requires: str | None = None
    hidden: bool = False  # a building block for other topics (#id); never assigned


@dataclass(frozen=True, slots=True)
class WatchlistRule:
    id: str
    entities: tuple[tuple[str, tuple[str, ...]], ...]  # (name, aliases)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """What a user wrote, hashable: each parse worker compiles it once."""

    topics: tuple[TopicRule, ...] = ()
    watchlists: tuple[WatchlistRule, ...] = ()


class RuleError(ValueError):
    """A rule that cannot compile; `where` names the topic (and language) or watchlist."""

    def __init__(self, where: tuple[str, ...], message: str, position: int | None = None):
        self.where = where
        self.message = message
        self.position = position
        at = f" (at position {position + 1} of the query)" if position is not None else ""
        super().__init__(f"{'.'.join(where)}: {message}{at}")


def is_acronym(term: str) -> bool:
    """Short all-capital terms (AI, KI, IA) match only in capitals: "ai registi" is Italian."""
    letters = [c for c in term if c.isalpha()]
    return 0 < len(letters) <= 5 and all(c.isupper() for c in letters)


@dataclass(frozen=True, slots=True)
class _Pattern:
    key: str  # lower-cased fold, what the automaton finds
    cased: str | None  # case-preserving fold that must match too (acronyms)
    prefix: bool


# Compiled query nodes: leaves hold pattern ids and the name shown in explanations.
@dataclass(frozen=True, slots=True)
class _Leaf:
    # pattern id -> the term shown in explanations (an alias shows its entity's name).
    # Evaluating a leaf walks the item's hits, not this: cost does not grow with terms.
    terms: dict[int, str]

    def __hash__(self) -> int:
        return id(self)


@dataclass(frozen=True, slots=True)
class _Topic:
    rule: TopicRule
    queries: dict[str, object]  # language -> compiled node


_WORD = re.compile(r"\w+")


@dataclass(slots=True)
class _Hit:
    term: str
    field: int
    start: int  # offset in the combined text
    end: int


@dataclass(slots=True)
class _Context:
    """One item being classified: its text, the hits, and memoised topic results."""

    text: str
    starts: tuple[int, ...]  # where title, summary and categories start in text
    language: str | None
    hits: dict[int, list[tuple[int, int, int]]]  # pattern id -> (field, start, end)
    words: list[int] | None = None
    topics: dict[tuple[str, frozenset[int] | None], tuple[bool, list[_Hit]]] = field(
        default_factory=dict
    )

    def word_index(self, offset: int) -> int:
        if self.words is None:
            self.words = [m.start() for m in _WORD.finditer(self.text)]
        return bisect.bisect_right(self.words, offset)


class Classifier:
    def __init__(self, rules: RuleSet):
        self.rules = rules
        self._patterns: list[_Pattern] = []
        self._ids: dict[_Pattern, int] = {}
        self._watch: dict[str, _Leaf] = {}
        for wl in rules.watchlists:
            pairs = []
            for name, aliases in wl.entities:
                for alias in dict.fromkeys((name, *aliases)):
                    # names are matched as written (accents aside): "Runway" the company,
                    # not a fashion runway; write an alias in lower case to ignore case
                    cased = alias != alias.lower()
                    pid = self._pattern(alias, False, ("watchlists", wl.id), cased=cased)
                    pairs.append((pid, name))
            self._watch[wl.id] = _Leaf({pid: name for pid, name in reversed(pairs)})
        by_id = {t.id: t for t in rules.topics}
        self._topics: dict[str, _Topic] = {}
        self._positive: set[str] = set()  # filled once compiled (see below)
        self._needs = {}
        for rule in rules.topics:
            queries = {}
            for lang, text in rule.queries:
                where = ("topics", rule.id, "query") + (() if lang == ALL else (lang,))
                try:
                    node = parse_query(text)
                except QueryError as exc:
                    raise RuleError(where, exc.message, exc.position) from None
                watch, topics = references(node)
                for name in sorted(watch - self._watch.keys()):
                    raise RuleError(where, f"unknown watchlist @{name}")
                for name in sorted(topics - by_id.keys()):
                    raise RuleError(where, f"unknown topic #{name}")
                queries[lang] = self._compile(node, where)
            if rule.requires is not None and rule.requires not in by_id:
                raise RuleError(("topics", rule.id, "requires"), f"unknown topic {rule.requires!r}")
            self._topics[rule.id] = _Topic(rule, queries)
        self._check_cycles(by_id)
        self._automaton = ahocorasick.Automaton()
        by_key: dict[str, list[int]] = {}
        for pid, pattern in enumerate(self._patterns):
            by_key.setdefault(pattern.key, []).append(pid)
        for key, pids in by_key.items():
            self._automaton.add_word(key, tuple(pids))
        if by_key:
            self._automaton.make_automaton()
        # A topic that cannot match without hits of its own patterns (no bare NOT) is
        # skipped at once for an item with none of them: most items, most topics.
        self._needs: dict[str, frozenset[int]] = {}
        for tid in self._topics:
            self._needs_of(tid)
        empty = _Context("", (0, 0, 0), None, {})
        self._positive = {tid for tid in self._topics if not self._topic(empty, tid, None)[0]}
        # Which assigned topics an item's hits can wake: an item is evaluated against
        # those (and the few that match without hits), not against every topic.
        self._visible = [tid for tid, t in self._topics.items() if not t.rule.hidden]
        self._order = {tid: i for i, tid in enumerate(self._visible)}
        self._always = {tid for tid in self._visible if tid not in self._positive}
        self._woken: dict[int, tuple[str, ...]] = {}
        for tid in self._visible:
            if tid in self._positive:
                for pid in self._needs[tid]:
                    self._woken[pid] = (*self._woken.get(pid, ()), tid)
        self._empty = self._evaluate(_Context("", (0, 0, 0), None, {})) if by_key else None

    def _needs_of(self, tid: str) -> frozenset[int]:
        if tid in self._needs:
            return self._needs[tid]
        out: set[int] = set()
        for query in self._topics[tid].queries.values():
            for node in walk(query):
                if isinstance(node, _Leaf):
                    out.update(node.terms)
                elif isinstance(node, TopicRef):
                    out.update(self._needs_of(node.name))
        self._needs[tid] = frozenset(out)
        return self._needs[tid]

    # -- compiling ---------------------------------------------------------------------------

    def _pattern(
        self, term: str, prefix: bool, where: tuple[str, ...], *, cased: bool = False
    ) -> int:
        term = " ".join(term.split())
        lower, folded = fold(term)
        if not lower.strip():
            raise RuleError(where, f"{term!r} has no letters or digits to match")
        exact = cased or is_acronym(term)
        pattern = _Pattern(lower.strip(), folded.strip() if exact else None, prefix)
        if pattern not in self._ids:
            self._ids[pattern] = len(self._patterns)
            self._patterns.append(pattern)
        return self._ids[pattern]

    def _compile(self, node: Node, where: tuple[str, ...]) -> object:
        if isinstance(node, Term):
            pid = self._pattern(node.text, node.prefix, where)
            return _Leaf({pid: node.text + ("*" if node.prefix else "")})
        if isinstance(node, Watch):
            return self._watch[node.name]
        if isinstance(node, Or):
            items = [self._compile(n, where) for n in node.items]
            # an OR of plain terms is one leaf: one pass over the hits instead of one per term
            leaves = [i for i in items if isinstance(i, _Leaf)]
            rest = [i for i in items if not isinstance(i, _Leaf)]
            if len(leaves) > 1:
                merged: dict[int, str] = {}
                for leaf in reversed(leaves):
                    merged.update(leaf.terms)
                leaves = [_Leaf(merged)]
            items = leaves + rest
            return items[0] if len(items) == 1 else Or(tuple(items))  # type: ignore[arg-type]
        if isinstance(node, And):
            return And(tuple(self._compile(n, where) for n in node.items))  # type: ignore[arg-type]
        if isinstance(node, Not):
            return Not(self._compile(node.item, where))  # type: ignore[arg-type]
        if isinstance(node, Field):
            fields = frozenset(FIELD_NAMES.index(f) for f in node.fields)
            return Field(fields, self._compile(node.item, where))  # type: ignore[arg-type]
        if isinstance(node, Near):
            left, right = self._compile(node.left, where), self._compile(node.right, where)
            return Near(left, right, node.distance)  # type: ignore[arg-type]
        return node  # TopicRef, resolved when evaluated

    def _check_cycles(self, by_id: dict[str, TopicRule]) -> None:
        """Refuse topics that refer to each other in a circle, or through so many topics
        and parentheses that evaluating them would outgrow Python's stack."""

        def in_queries(tid: str) -> tuple[set[str], int]:
            """The topics tid's queries name, and how deep its queries are."""
            out, levels = set(), 1
            for _, text in by_id[tid].queries:
                node = parse_query(text)
                out |= references(node)[1]
                levels = max(levels, height(node) + 1)
            return out, levels

        def deps(tid: str) -> tuple[set[str], int]:
            refs, levels = in_queries(tid)
            requires = by_id[tid].requires
            return (refs | {requires} if requires else refs), levels

        state: dict[str, int] = {}
        deepest: dict[str, int] = {}  # a topic's levels, with the deepest it refers to
        via: dict[str, str] = {}  # the topic through which that deepest chain goes

        def visit(tid: str, path: tuple[str, ...], above: int) -> int:
            if state.get(tid) == 2:
                if above + deepest[tid] > _MAX_LEVELS:
                    raise _too_deep(path, tid)
                return deepest[tid]
            if state.get(tid) == 1:
                cycle = (*path[path.index(tid) :], tid)
                if len(cycle) == 2:
                    how = (
                        "requires: itself" if by_id[tid].requires == tid else f"#{tid} in its query"
                    )
                    raise RuleError(("topics", tid), f"refers to itself ({how})")
                # an edge that is a requires: is not seen by looking for #name in queries
                required = [
                    f"{a} requires: {b}"
                    for a, b in itertools.pairwise(cycle)
                    if by_id[a].requires == b and b not in in_queries(a)[0]
                ]
                note = f" ({'; '.join(required)})" if required else ""
                raise RuleError(
                    ("topics", tid),
                    f"topics refer to each other in a circle: {' -> '.join(cycle)}{note}",
                )
            refs, levels = deps(tid)
            if above + levels > _MAX_LEVELS:
                raise _too_deep(path, tid)
            state[tid] = 1
            below = 0
            for d in sorted(refs):
                got = visit(d, (*path, tid), above + levels)
                if got > below:
                    below, via[tid] = got, d
            state[tid] = 2
            deepest[tid] = levels + below
            return deepest[tid]

        def _too_deep(path: tuple[str, ...], tid: str) -> RuleError:
            chain = [*path, tid]
            while chain[-1] in via:  # a topic checked before: the chain it leads to, named
                chain.append(via[chain[-1]])
            names = [f"#{t}" for t in chain]
            shown = " -> ".join(names if len(names) <= 6 else [*names[:3], "…", *names[-2:]])
            return RuleError(
                ("topics", path[0] if path else tid),
                f"refers through other topics ({shown}) to queries nested more than "
                f"{_MAX_LEVELS} deep in all: fewer topics in the chain, or fewer parentheses",
            )

        for tid in by_id:
            visit(tid, (), 0)

    # -- matching ----------------------------------------------------------------------------

    def classify(self, item: Item) -> tuple[Match, ...]:
        parts = (item.title, item.summary, " ; ".join(item.categories))
        # NUL between fields (clean text never holds one): no phrase spans two fields
        text = "\x00".join(parts)
        starts = (0, len(parts[0]) + 1, len(parts[0]) + len(parts[1]) + 2)
        hits = self._scan(text, starts)
        if not hits and self._empty is not None:
            return self._empty
        return self._evaluate(_Context(text, starts, item.language, hits))

    def _scan(self, text: str, starts: tuple[int, ...]) -> dict[int, list[tuple[int, int, int]]]:
        if not self._patterns:
            return {}
        lower, cased = fold(text)
        n = len(lower)
        hits: dict[int, list[tuple[int, int, int]]] = {}
        for end, pids in self._automaton.iter(lower):
            for pid in pids:
                p = self._patterns[pid]
                start = end - len(p.key) + 1
                if start > 0 and lower[start - 1].isalnum():
                    continue
                if not p.prefix and end + 1 < n and lower[end + 1].isalnum():
                    continue
                if p.cased is not None and cased[start : end + 1] != p.cased:
                    continue
                fld = 2 if start >= starts[2] else (1 if start >= starts[1] else 0)
                hits.setdefault(pid, []).append((fld, start, end + 1))
        return hits

    def _evaluate(self, ctx: _Context) -> tuple[Match, ...]:
        candidates = set(self._always)
        for pid in ctx.hits:
            candidates.update(self._woken.get(pid, ()))
        out = []
        for tid in sorted(candidates, key=self._order.__getitem__):
            ok, hits = self._topic(ctx, tid, None)
            if ok:
                out.append(self._match(ctx, tid, hits))
        return tuple(out)

    def _match(self, ctx: _Context, tid: str, hits: list[_Hit]) -> Match:
        # One term per place in the text (cinema, cinema* and cinéma found at one spot
        # count once), and each term once, at its best weight.
        best: dict[str, float] = {}
        first: dict[str, tuple[str, int]] = {}
        taken: set[int] = set()
        for h in sorted(hits, key=lambda h: (h.start, -h.end, h.term.endswith("*"))):
            if h.start in taken:
                continue
            taken.add(h.start)
            best[h.term] = max(best.get(h.term, 0.0), FIELD_WEIGHT[h.field])
            first.setdefault(h.term, (FIELD_NAMES[h.field], h.start - ctx.starts[h.field]))
        positions = tuple((term, fld, off) for term, (fld, off) in first.items())
        return Match(tid, tuple(first), round(sum(best.values()), 3), positions)

    def _topic(
        self, ctx: _Context, tid: str, fields: frozenset[int] | None
    ) -> tuple[bool, list[_Hit]]:
        key = (tid, fields)
        if key in ctx.topics:
            return ctx.topics[key]
        ctx.topics[key] = (False, [])  # guards against surprises; cycles are refused at compile
        topic = self._topics[tid]
        rule = topic.rule
        result: tuple[bool, list[_Hit]] = (False, [])
        if tid in self._positive and self._needs[tid].isdisjoint(ctx.hits):
            ctx.topics[key] = result
            return result
        if rule.requires is None or self._topic(ctx, rule.requires, None)[0]:
            ok, hits = False, []
            for lang, node in topic.queries.items():
                if lang == ALL or ctx.language is None or lang == ctx.language:
                    o, h = self._eval(ctx, node, fields)
                    if o:
                        ok = True
                        hits += h
            # each place and term once: topics referring to one topic through several
            # others (a -> b, c -> d, 30 levels deep) passed up 2**30 copies of d's hits
            hits = list({(h.start, h.end, h.term): h for h in hits}.values())
            if ok and rule.min_score:
                score = self._match(ctx, tid, hits).score if hits else 0.0
                ok = score >= rule.min_score
            result = (ok, hits if ok else [])
        ctx.topics[key] = result
        return result

    def _eval(
        self, ctx: _Context, node: object, fields: frozenset[int] | None
    ) -> tuple[bool, list[_Hit]]:
        if isinstance(node, _Leaf):
            terms, hits_by = node.terms, ctx.hits
            # walk whichever is smaller: the item's hits or the leaf's terms
            pids = (
                [p for p in hits_by if p in terms]
                if len(hits_by) <= len(terms)
                else [p for p in terms if p in hits_by]
            )
            found = [
                _Hit(terms[pid], fld, start, end)
                for pid in pids
                for fld, start, end in hits_by[pid]
                if fields is None or fld in fields
            ]
            return bool(found), found
        if isinstance(node, And):
            hits: list[_Hit] = []
            for child in node.items:
                ok, h = self._eval(ctx, child, fields)
                if not ok:
                    return False, []
                hits += h
            return True, hits
        if isinstance(node, Or):
            hits = []
            any_ok = False
            for child in node.items:
                ok, h = self._eval(ctx, child, fields)
                if ok:
                    any_ok = True
                    hits += h
            return any_ok, hits
        if isinstance(node, Not):
            ok, _ = self._eval(ctx, node.item, fields)
            return not ok, []
        if isinstance(node, Field):
            inner = node.fields if fields is None else node.fields & fields
            return self._eval(ctx, node.item, inner)
        if isinstance(node, Near):
            lok, left = self._eval(ctx, node.left, fields)
            rok, right = self._eval(ctx, node.right, fields)
            if not (lok and rok):
                return False, []
            # each hit once (a hit near two others, or the same term found by two
            # branches, is one hit), so NEARs in NEARs cost pairs of hits, not products;
            # two places, not one: `film NEAR/5 film` needs the word twice
            near: dict[tuple[int, int, str], _Hit] = {}
            for a in left:
                wa = ctx.word_index(a.start)
                for b in right:
                    if (
                        a.field == b.field
                        and (a.end <= b.start or b.end <= a.start)
                        and abs(wa - ctx.word_index(b.start)) <= node.distance
                    ):
                        near[a.start, a.end, a.term] = a
                        near[b.start, b.end, b.term] = b
            return bool(near), list(near.values())
        if isinstance(node, TopicRef):
            return self._topic(ctx, node.name, fields)
        raise TypeError(node)


def compile_rules(rules: RuleSet) -> Classifier:
    return Classifier(rules)


def keyword_rules(topics: dict[str, Iterable[str]]) -> RuleSet:
    """A RuleSet from plain keyword lists (what the foundation's feeds.yaml allowed)."""
    return RuleSet(
        topics=tuple(
            TopicRule(tid, tid, ((ALL, " OR ".join(f'"{t}"' for t in terms)),))
            for tid, terms in topics.items()
        )
    )
