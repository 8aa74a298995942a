"""The topic query language: text in, a syntax tree out. Pure.

    query   := or
    or      := and ("OR" and)*
    and     := not (["AND"] not)*            juxtaposition means AND
    not     := "NOT" not | near
    near    := primary ("NEAR/" N primary)*   within N words of each other
    primary := "(" or ")" | FIELD ":" primary | term | @watchlist | #topic
    term    := word | word* | "a phrase" | "a phrase*" ("a phrase"* too)

Operators are written in capitals; FIELD is title, summary or category. A term
written in capitals only (up to five letters: AI, KI, IA, WGA) matches only in
capitals; any other term ignores case and accents.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FIELDS = {"title": "title", "summary": "summary", "category": "category", "categories": "category"}


class QueryError(ValueError):
    def __init__(self, message: str, position: int):
        self.message = message
        self.position = position  # 0-based offset in the query text
        super().__init__(f"{message} (at position {position + 1} of the query)")


@dataclass(frozen=True, slots=True)
class Term:
    text: str
    prefix: bool = False  # deepfake* matches deepfakes, deepfaked


@dataclass(frozen=True, slots=True)
class Watch:
    name: str


@dataclass(frozen=True, slots=True)
class TopicRef:
    name: str


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Node


@dataclass(frozen=True, slots=True)
class Near:
    left: Node
    right: Node
    distance: int


@dataclass(frozen=True, slots=True)
class Field:
    fields: frozenset[str]
    item: Node


Node = Term | Watch | TopicRef | And | Or | Not | Near | Field

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<phrase>"(?P<ptext>[^"]*)"(?P<pstar>\*)?)
  | (?P<open>")
  | (?P<near>NEAR/(?P<dist>\d+)(?![^\s()"]))
  | (?P<badnear>NEAR/?[^\s()"]*)
  | (?P<field>(?P<fname>[A-Za-z]+):(?=[^\s]))
  | (?P<word>[^\s()"]+)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str
    value: str
    pos: int
    prefix: bool = False


# Curly and angled quotes a word processor or a keyboard layout puts in: read as ".
# One character for one, so positions in the query stay right.
_QUOTES = str.maketrans({c: '"' for c in "\u201c\u201d\u201e\u201f\u00ab\u00bb"})
# What is written as a regular expression, which queries are not: AI|KI, film(s)?, deepfake.*
_REGEX_LIKE = re.compile(r"[|\\{}]|\.\*|^\?|\)\?|^\^")
_MAX_DEPTH = 50  # parentheses, NOTs, NEARs, fields in one another: no query a person writes


def _word_problem(word: str) -> str | None:
    """Why a bare word is not what its writer meant, if it is one of the usual slips."""
    if word in ("and", "or", "not"):  # "And" in a title ("Now And Then") is a word
        return (
            f"{word!r} in lower case is a word to look for: write {word.upper()} for the "
            f'operator, or "{word}" in quotes for the word'
        )
    if re.fullmatch(r"near/\d*", word, re.IGNORECASE):
        return f"NEAR is written in capitals, like NEAR/10 (not {word!r})"
    if word.endswith((",", ";")):
        return "a comma is not an operator: separate alternatives with OR (AI OR film)"
    if _REGEX_LIKE.search(word):
        return (
            f"{word!r} looks like a regular expression: queries use OR for alternatives "
            "and a * at the end of a word for its endings (film*)"
        )
    if word.endswith(":") and word[:-1].lower() in FIELDS:
        return f"no space goes after {word!r}: write {word}(AI OR KI) or {word}AI"
    return None


def _tokens(text: str) -> list[_Tok]:
    text = text.translate(_QUOTES)
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        assert m is not None  # the word alternative matches anything else
        kind = m.lastgroup or ""
        if m.group("space"):
            pass
        elif m.group("lparen"):
            out.append(_Tok("(", "(", pos))
        elif m.group("rparen"):
            out.append(_Tok(")", ")", pos))
        elif m.group("phrase") is not None:
            phrase = " ".join(m.group("ptext").split())
            prefix = bool(m.group("pstar")) or phrase.endswith("*")
            phrase = phrase.rstrip("*").rstrip()
            if not phrase:
                raise QueryError("empty quotes", pos)
            out.append(_Tok("term", phrase, pos, prefix=prefix))
        elif m.group("open"):
            raise QueryError('a quote (") is not closed', pos)
        elif m.group("near"):
            if int(m.group("dist")) < 1:
                raise QueryError("NEAR needs a distance of 1 word or more, like NEAR/10", pos)
            out.append(_Tok("NEAR", m.group("dist"), pos))
        elif m.group("badnear"):
            raise QueryError("NEAR needs a distance in words, like NEAR/10", pos)
        elif m.group("field"):
            name = m.group("fname")
            if name.lower() not in FIELDS:
                raise QueryError(f"unknown field {name!r} (fields: title, summary, category)", pos)
            out.append(_Tok("field", FIELDS[name.lower()], pos))
        else:
            word = m.group("word")
            if word in ("AND", "OR", "NOT"):
                out.append(_Tok(word, word, pos))
            elif word[0] in "@#":
                if not re.fullmatch(r"[@#][A-Za-z0-9][A-Za-z0-9_.-]*", word):
                    raise QueryError(f"{word!r} is not a watchlist (@name) or topic (#name)", pos)
                out.append(_Tok("watch" if word[0] == "@" else "topic", word[1:], pos))
            else:
                if problem := _word_problem(word):
                    raise QueryError(problem, pos)
                prefix = word.endswith("*")
                core = word.rstrip("*")
                if not core or "*" in core:
                    raise QueryError("a * goes at the end of a word, like deepfake*", pos)
                out.append(_Tok("term", core, pos, prefix=prefix))
        del kind
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def where(self) -> int:
        tok = self.peek()
        return tok.pos if tok else len(self.text)

    def parse(self) -> Node:
        if not self.toks:
            raise QueryError("the query is empty", 0)
        node = self.or_()
        tok = self.peek()
        if tok is not None:
            if tok.kind == ")":
                raise QueryError("a ) has no matching (", tok.pos)
            raise QueryError(f"unexpected {tok.value!r}", tok.pos)
        return node

    def or_(self) -> Node:
        items = [self.and_()]
        while (tok := self.peek()) is not None and tok.kind == "OR":
            self.take()
            items.append(self.and_())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_(self) -> Node:
        items = [self.not_()]
        while (tok := self.peek()) is not None and tok.kind not in ("OR", ")"):
            if tok.kind == "AND":
                self.take()
            items.append(self.not_())
        return items[0] if len(items) == 1 else And(tuple(items))

    def deeper(self, tok: _Tok) -> None:
        """One level more of a tree every part of the service walks recursively."""
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise QueryError(f"nested more than {_MAX_DEPTH} deep", tok.pos)

    def not_(self) -> Node:
        tok = self.peek()
        if tok is not None and tok.kind == "NOT":
            self.take()
            self.deeper(tok)
            node = Not(self.not_())
            self.depth -= 1
            return node
        return self.near()

    def near(self) -> Node:
        node = self.primary()
        negated = _has_not(node)
        levels = height(node)
        while (tok := self.peek()) is not None and tok.kind == "NEAR":
            self.take()
            right = self.primary()
            if negated or _has_not(right):
                raise QueryError("NOT cannot be used inside NEAR", tok.pos)
            # a NEAR b NEAR c nests to the left, below whatever its operands hold
            levels = max(levels, height(right)) + 1
            if self.depth + levels > _MAX_DEPTH:
                raise QueryError(f"nested more than {_MAX_DEPTH} deep", tok.pos)
            node = Near(node, right, int(tok.value))
        return node

    def primary(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise QueryError("the query ends where a term was expected", len(self.text))
        if tok.kind == "(":
            self.take()
            self.deeper(tok)
            node = self.or_()
            self.depth -= 1
            close = self.peek()
            if close is None or close.kind != ")":
                raise QueryError("a ( is not closed", tok.pos)
            self.take()
            return node
        if tok.kind == "field":
            self.take()
            self.deeper(tok)
            field = Field(frozenset({tok.value}), self.primary())
            self.depth -= 1
            return field
        if tok.kind == "term":
            self.take()
            return Term(tok.value, tok.prefix)
        if tok.kind == "watch":
            self.take()
            return Watch(tok.value)
        if tok.kind == "topic":
            self.take()
            return TopicRef(tok.value)
        raise QueryError(f"expected a term where {tok.value!r} is", tok.pos)


def children(node: object) -> tuple[object, ...]:
    """The sub-queries of a node (of a parsed query, or of a compiled one)."""
    if isinstance(node, And | Or):
        return node.items
    if isinstance(node, Not | Field):
        return (node.item,)
    if isinstance(node, Near):
        return (node.left, node.right)
    return ()


def walk(node: object) -> list[object]:
    """The node and every node below it."""
    out = [node]
    for child in children(node):
        out += walk(child)
    return out


def height(node: object) -> int:
    """Levels below a node (without recursion: the parser measures before anything recurses)."""
    levels, level = 0, [node]
    while level := [c for n in level for c in children(n)]:
        levels += 1
    return levels


def _has_not(node: Node) -> bool:
    return any(isinstance(n, Not) for n in walk(node))


def parse_query(text: str) -> Node:
    """Parse a query; raise QueryError naming the position of the first problem."""
    return _Parser(text).parse()


def references(node: Node) -> tuple[set[str], set[str]]:
    """(watchlists, topics) a query refers to."""
    nodes = walk(node)
    return (
        {n.name for n in nodes if isinstance(n, Watch)},
        {n.name for n in nodes if isinstance(n, TopicRef)},
    )
