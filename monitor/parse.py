"""feedparser -> Items: safe, pure, and meant to run in a process pool.

feedparser costs ~0.8 ms of CPU per entry, so `parse_and_classify` runs in
worker processes, never on the event loop; it takes bytes and returns frozen
Items, and never does I/O.
"""

from __future__ import annotations

import calendar
import functools
import gc
import hashlib
import io
import os
import re
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

from monitor.classify import RuleSet, classify, rules_for
from monitor.classify.text import guess_language
from monitor.errors import ParseError
from monitor.normalize import (
    SUMMARY_MAX,
    TITLE_MAX,
    canonical_url,
    clean_identifier,
    clean_text,
    language_code,
    plausible_published,
)
from monitor.stories import Signature, signature
from monitor.types import Item, Match, ParsedBlob, ParsedFeed

MAX_ITEMS = 5_000  # entries kept from one document, in document order (newest first in practice)
# entries a document may hold at all: feedparser reads every one before any is dropped,
# ~40 us each however empty (10 MB of bare <item/>s is 12 s of a parse worker, every poll)
MAX_ENTRIES_READ = 5 * MAX_ITEMS
_PROLOG_SCAN = 256 * 1024
# An internal DTD subset or any entity declaration: feeds never need them, and
# feedparser's loose fallback parser expands a 110 KB quadratic blowup to gigabytes.
_DTD_SUBSET = re.compile(rb"<!DOCTYPE[^>\[]*\[", re.IGNORECASE)
_ENTITY_DECL = re.compile(rb"<!ENTITY", re.IGNORECASE)
# What may come before the root element: a BOM, whitespace, <?...?>, comments and a
# DOCTYPE without a subset. A megabyte of comments must not hide a DOCTYPE from the scan.
_BOM = re.compile(rb"\xef\xbb\xbf|\xff\xfe|\xfe\xff")
_PROLOG_PART = re.compile(rb"\s+|<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>\[]*>", re.IGNORECASE | re.DOTALL)
_ELEMENT = re.compile(rb"<[A-Za-z_]")
_XML_ENCODING = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]+)", re.IGNORECASE)
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9._-]+)", re.IGNORECASE)
_HTML_START = re.compile(
    rb"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b", re.I | re.S
)


_NO_RULES = RuleSet()


@dataclass(frozen=True, slots=True)
class ParseJob:
    """Everything a worker process needs to turn a body into items and matches."""

    feed: str
    url: str
    body: bytes
    headers: dict[str, str]
    language: str | None  # configured; beats what the feed declares
    now: datetime
    rules: RuleSet = _NO_RULES
    gate: str | None = None  # the topic every relevant item has (for story signatures)
    # identities of items stored already: their entries are left out, unread
    known: frozenset[str] = frozenset()


def _prolog_end(text: bytes) -> int:
    """Where the root element starts; the end of `text` when what precedes it is not
    a plain prolog (then all of it is scanned)."""
    bom = _BOM.match(text)
    pos = bom.end() if bom else 0
    while part := _PROLOG_PART.match(text, pos):
        pos = part.end()
    return pos if _ELEMENT.match(text, pos) else len(text)


def refuse_dangerous_markup(body: bytes) -> None:
    # UTF-16/32 documents interleave NULs with the ASCII markup; dropping them
    # lets one check cover every encoding.
    text = body.replace(b"\x00", b"")
    prolog = text[: max(_prolog_end(text), _PROLOG_SCAN)]
    if _ENTITY_DECL.search(prolog) or _DTD_SUBSET.search(prolog):
        raise ParseError(
            "refused: the document declares XML entities (<!DOCTYPE [...]> / <!ENTITY>), "
            "which feeds never need and which can expand to gigabytes"
        )
    entries = text.count(b"<item") + text.count(b"<entry")  # an overcount is harmless
    if entries > MAX_ENTRIES_READ:
        raise ParseError(
            f"refused: {entries:,} items in one document, more than any feed carries (a "
            f"feed lists its latest, a few hundred at most; reading them all would hold a "
            f"parser for seconds on every poll)"
        )


def init_parse_worker(owner: int) -> None:
    """Set up a parse worker process (here, not in pipeline.py: the forkserver preloads
    this module, and a worker that unpickled a pipeline function would import storage)."""
    # Ctrl-C reaches the whole process group; the service shuts the pool down itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker's parent is the forkserver, not the service: if the service is killed
    # (SIGKILL, OOM), the worker would wait on its queue forever. It leaves instead.
    threading.Thread(target=_exit_with, args=(owner,), daemon=True).start()
    # What the forkserver preloaded (feedparser, this module) lives as long as the worker:
    # out of the cyclic collector's sight, as in monitor.launch.
    gc.freeze()


def _exit_with(owner: int) -> None:
    while True:
        time.sleep(1.0)
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:  # the pid was reused by another user's process
            os._exit(0)


def parse_and_classify(job: ParseJob) -> ParsedFeed:
    try:
        parsed = parse_document(job)
    except ParseError as exc:
        exc.feed, exc.url = job.feed, job.url
        raise
    if not job.rules.topics:
        return parsed
    rules = rules_for(job.rules)
    matches: dict[str, tuple[Match, ...]] = {}
    signatures: dict[str, Signature] = {}
    for item in parsed.items:
        found = classify(rules, item)
        if found:
            matches[item.identity] = found
            signatures[item.identity] = signature(item, found, job.gate)
    return ParsedFeed(
        parsed.title, parsed.language, parsed.items, matches, parsed.warning, signatures
    )


def parse_to_blob(job: ParseJob) -> ParsedBlob:
    """parse_and_classify, its result pickled here: the service passes it to storage
    without reading its items (see ParsedBlob)."""
    return ParsedBlob.of(parse_and_classify(job))


def repair_utf8(body: bytes, content_type: str) -> bytes:
    """A UTF-8 document with a few invalid bytes, those bytes replaced by U+FFFD.

    feedparser reads a document that is not valid UTF-8 as windows-1252, which
    garbles every accented letter of the feed for one stray byte. A document with
    more invalid bytes than valid UTF-8 characters is most likely Latin-1 saying
    UTF-8: left to feedparser, which reads that one right.
    """
    charset = _CHARSET.search(content_type)
    declared = _XML_ENCODING.match(body[:1024])
    if charset:  # HTTP's charset beats the document's own claim, as feedparser has it
        encoding = charset.group(1)
    elif declared:
        encoding = declared.group(1).decode("ascii")
    else:
        encoding = "utf-8"  # XML's default
    if encoding.lower() not in ("utf-8", "utf8"):
        return body
    if body[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in body[:4]:
        return body  # UTF-16 or UTF-32, with a BOM or without
    try:
        body.decode("utf-8")
        return body
    except UnicodeDecodeError:
        pass
    text = body.decode("utf-8", "replace")
    invalid = text.count("\ufffd")
    multibyte = len(body) - len(text)  # bytes beyond one per character: UTF-8 sequences
    return text.encode("utf-8") if multibyte > invalid else body


def parse_document(job: ParseJob) -> ParsedFeed:
    body = job.body
    if not body.strip():
        raise ParseError("empty response body")
    refuse_dangerous_markup(body)
    body = repair_utf8(body, job.headers.get("content-type", ""))
    feedparser = _feedparser()

    # feedparser opens a str or bytes argument that looks like a path or URL
    # (a body of "/etc/passwd" is read): always pass a file object.
    # Without a base URI: feedparser joins its base with itself at every element (a
    # quarter of its time); the few relative links are resolved below, in _item.
    headers = {k: v for k, v in job.headers.items() if k != "content-location"}
    doc = feedparser.parse(
        io.BytesIO(body),
        response_headers=headers,
        sanitize_html=False,  # we reduce HTML to text ourselves
        resolve_relative_uris=False,
    )
    if not doc.get("version") and not doc.entries:
        if _HTML_START.match(body[:4096]):
            raise ParseError(
                "not a feed: the server sent an HTML page (the site's address, not its feed?)"
            )
        reason = doc.get("bozo_exception")
        raise ParseError(f"not an RSS or Atom feed{f': {reason}' if reason else ''}")
    feed_info = doc.get("feed", {})
    language = job.language or language_code(feed_info.get("language"))
    base = job.headers.get("content-location") or job.url
    items: list[Item] = []
    seen: set[str] = set()
    for entry in doc.entries[:MAX_ITEMS]:
        item = _item(job, entry, base, language)
        if item is not None and item.identity not in seen:
            seen.add(item.identity)
            items.append(item)
    warning = None
    if doc.get("bozo"):
        warning = f"not well-formed, read as far as possible: {doc.get('bozo_exception')}"[:500]
    return ParsedFeed(
        title=clean_text(feed_info.get("title"), TITLE_MAX) or None,
        language=language,
        items=tuple(items),
        warning=warning,
    )


@functools.cache
def _feedparser() -> Any:
    """feedparser, imported here, not at the top: only parse workers need it; with three
    of its hot spots made cheaper (the third: _translate_only_c1_text), the entries it
    returns unchanged.

    feedparser maps windows-1252's C1 characters (0x80-0x9f) back to what they mean in
    the text of every element, with str.translate and a dict: for any text that is not
    pure ASCII, each character misses the dict and raises a KeyError inside translate,
    a sixth of a parse. The same mapping as a string indexed by code point (the plane
    where text lives; beyond it the lookup misses as the dict's did) translates the same
    text 2.4x faster. The dict is swapped only if it is still what this reads it as.

    And its parsers read the current element's content parameters (type, language,
    base) at every piece of text, from a FeedParserDict, whose every lookup walks its
    aliases in Python; they are read from a plain dict instead (see _ContentParams)."""
    import feedparser
    import feedparser.api
    import feedparser.mixin

    table = getattr(feedparser.mixin, "_cp1252", None)
    if (
        isinstance(table, dict)
        and table
        and all(0x80 <= k <= 0x9F and isinstance(v, str) and len(v) == 1 for k, v in table.items())
    ):
        feedparser.mixin._cp1252 = cp1252_as_string(table)
        _translate_only_c1_text(feedparser.mixin)
    for name in ("StrictFeedParser", "LooseFeedParser"):
        parser = getattr(feedparser.api, name, None)
        if isinstance(parser, type) and _plain_content_params_fit(parser):
            setattr(feedparser.api, name, _with_plain_content_params(parser))
    return feedparser


_TRANSLATE = "output = output.translate(_cp1252)"
_C1_SEARCH = "_reelwatch_c1_search"


def _translate_only_c1_text(mixin: Any) -> None:
    """feedparser's pop translates every text it keeps (see _feedparser); but the table
    maps only C1 characters (U+0080-U+009F), which nearly no text holds, and any text
    that is not ASCII takes the slow, per-character path: a tenth of a parse. pop is
    compiled again from its own source with that one line made to skip the texts
    holding no C1 character (a regex scan: the same output, found in C). Left as it
    is if its source is not what this reads it as."""
    import inspect
    import textwrap

    cls = getattr(mixin, "_FeedParserMixin", None)
    pop = getattr(cls, "pop", None)
    if pop is None or getattr(pop, "_translates_c1_only", False):
        return
    try:
        lines, first = inspect.getsourcelines(pop)
    except (OSError, TypeError):
        return
    # blank lines before it: a traceback names pop's lines of feedparser's file
    source = "\n" * (first - 1) + textwrap.dedent("".join(lines))
    if source.count(_TRANSLATE) != 1 or "super(" in source or _C1_SEARCH in source:
        return
    source = source.replace(
        _TRANSLATE,
        f"output = output if output.isascii() or not {_C1_SEARCH}(output) "
        "else output.translate(_cp1252)",
    )
    namespace = vars(mixin)
    namespace[_C1_SEARCH] = re.compile("[\x80-\x9f]").search
    compiled: dict[str, Any] = {}
    exec(compile(source, inspect.getsourcefile(pop) or "<feedparser pop>", "exec"),
         namespace, compiled)  # fmt: skip
    new = compiled["pop"]
    new.__qualname__, new._translates_c1_only = pop.__qualname__, True
    cls.pop = new


class _ContentParams(dict):
    """The current element's content parameters as feedparser keeps them, in a plain
    dict: none of their keys (type, language, base, base64, mode, src) is one of
    FeedParserDict's aliases, so its lookups find what a FeedParserDict's would, at C
    speed (they were an eighth of a parse). Copied into an entry (title_detail,
    content...) as the FeedParserDict feedparser's own copy makes: the values are
    strings, booleans or None, so a shallow copy is a deep one."""

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        from feedparser.util import FeedParserDict

        return FeedParserDict(self)


def _plain_content_params_fit(parser: type) -> bool:
    """Whether `parser` keeps its content parameters as this release of feedparser
    does: set up in __init__, replaced in push_content."""
    return all(callable(getattr(parser, m, None)) for m in ("__init__", "push_content"))


def _with_plain_content_params(parser: type) -> type:
    if getattr(parser, "_plain_content_params", False):
        return parser

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        parser.__init__(self, *args, **kwargs)
        self.contentparams = _ContentParams(self.contentparams)

    def push_content(self: Any, *args: Any, **kwargs: Any) -> None:
        parser.push_content(self, *args, **kwargs)
        self.contentparams = _ContentParams(self.contentparams)

    return type(
        parser.__name__, (parser,),
        {"__init__": __init__, "push_content": push_content, "_plain_content_params": True},
    )  # fmt: skip


def cp1252_as_string(table: dict[int, str]) -> str:
    """A str.translate table with `table`'s mapping, as a string over the first plane."""
    chars = [chr(code) for code in range(0x10000)]
    for code, to in table.items():
        chars[code] = to
    return "".join(chars)


# An entry's fields read as a dict's: FeedParserDict.get walks its aliases in Python for
# every key, and none of the keys read here is an alias (an absent "updated" falls back to
# "published" there, which is read first here anyway)
_get = dict.get


def _published(entry: Any) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        parsed = _get(entry, key)
        if parsed:
            try:
                # feedparser's struct_time is already UTC
                return datetime.fromtimestamp(calendar.timegm(parsed), tz=UTC)
            except (OverflowError, ValueError, OSError):
                return None
    return None


def _item(job: ParseJob, entry: Any, base: str, language: str | None) -> Item | None:
    guid = clean_identifier(_get(entry, "id"), 2000) or None
    if guid and guid in job.known:
        return None  # stored already: cleaning, classifying it again would change nothing
    link = (_get(entry, "link") or "").strip()
    if link and not link.startswith(("http://", "https://")):
        link = urljoin(base, link)  # relative to the document (costly: most links are not)
    url = canonical_url(link) if link else None
    title = clean_text(_get(entry, "title"), TITLE_MAX)
    summary_html = _get(entry, "summary") or ""
    if not summary_html and _get(entry, "content"):
        summary_html = entry["content"][0].get("value", "")
    summary = clean_text(summary_html, SUMMARY_MAX)
    raw_date = _get(entry, "published") or _get(entry, "updated") or ""
    if guid:
        identity = guid
    elif url:
        identity = url
    elif title or summary:
        identity = (
            "sha1:" + hashlib.sha1(f"{title}\n{raw_date}\n{summary[:200]}".encode()).hexdigest()
        )
    else:
        return None  # nothing to show or to recognise it by
    if len(identity) > 500:
        identity = "sha1:" + hashlib.sha1(identity.encode()).hexdigest()
    categories = tuple(
        dict.fromkeys(
            t
            for t in (clean_text(tag.get("term"), 100) for tag in (_get(entry, "tags") or [])[:30])
            if t
        )
    )
    # Several real feeds declare the wrong language (Italian sites saying "en"): a
    # confident guess from the words themselves beats the declared or configured one.
    language = guess_language(f"{title} {summary}") or language
    return Item(
        feed=job.feed,
        identity=identity,
        guid=guid,
        url=url,
        title=title or (summary[:120] if summary else "(untitled)"),
        summary=summary,
        published=plausible_published(_published(entry), job.now),
        language=language,
        author=clean_text(_get(entry, "author"), 200) or None,
        categories=categories,
    )
