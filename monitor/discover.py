"""Finding a site's feed: from a page's <link rel="alternate">, else from common paths.

`feed_links` and `common_feed_urls` decide (pure, from a page's bytes and URL);
`find_feed` fetches and parses the candidates in order until one is a feed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit, urlunsplit

from monitor.errors import FeedError, FetchError, ParseError
from monitor.fetch import Fetcher
from monitor.normalize import canonical_url, is_http_url
from monitor.parse import ParseJob, parse_document
from monitor.types import ParsedFeed

FEED_TYPES = frozenset({"application/rss+xml", "application/atom+xml"})
# tried, in this order, on the site's root when a page links no feed
COMMON_PATHS = ("/feed/", "/rss", "/feed", "/rss.xml", "/atom.xml", "/feed.xml", "/index.xml")
MAX_CANDIDATES = 12  # one `feeds add` never makes more requests than this, plus the page
_PAGE_READ_MAX = 1024 * 1024  # <link>s sit in <head>; a page's first megabyte is plenty
_HTML_START = re.compile(
    rb"^(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body|meta|title)\b",
    re.I | re.S,
)
_XML_START = re.compile(rb"^(?:\xef\xbb\xbf)?\s*<(?:\?xml|rss|feed|rdf:RDF)\b", re.I)


class _LinkCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "").strip() for k, v in attrs}
        if tag == "base" and a.get("href") and self.base is None:
            self.base = a["href"]
        elif tag == "link" and a.get("href"):
            rel = a.get("rel", "").lower().split()
            kind = a.get("type", "").lower().split(";")[0].strip()
            if "alternate" in rel and kind in FEED_TYPES:
                self.links.append(a["href"])

    handle_startendtag = handle_starttag


def _decode(body: bytes) -> str:
    head = body[:_PAGE_READ_MAX]
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError:
        return head.decode("cp1252", errors="replace")


def feed_links(page: bytes, page_url: str) -> list[str]:
    """The RSS and Atom feeds a page links with <link rel="alternate">, in page order.

    Relative hrefs are resolved against <base href> or the page's URL; only
    http(s) URLs are kept, each once.
    """
    collector = _LinkCollector()
    try:
        collector.feed(_decode(page))
        collector.close()
    except Exception:  # html.parser is lenient; whatever it read so far still counts
        pass
    base = urljoin(page_url, collector.base) if collector.base else page_url
    out: list[str] = []
    seen: set[str] = set()
    for href in collector.links:
        url = urljoin(base, href)
        key = canonical_url(url)
        if key and is_http_url(url) and key not in seen:
            seen.add(key)
            out.append(url)
    return out


def common_feed_urls(page_url: str) -> list[str]:
    """Where sites usually keep their feed: /feed/, /rss, ... on the page's host."""
    parts = urlsplit(page_url)
    return [urlunsplit((parts.scheme, parts.netloc, path, "", "")) for path in COMMON_PATHS]


def looks_like_html(body: bytes, content_type: str | None) -> bool:
    """A web page rather than a feed: by its first bytes, else by its Content-Type.

    The bytes win because servers label feeds text/html and pages text/xml.
    """
    head = body[:4096]
    if _HTML_START.match(head):
        return True
    if _XML_START.match(head):
        return False
    kind = (content_type or "").lower().split(";")[0].strip()
    return kind in ("text/html", "application/xhtml+xml")


@dataclass(frozen=True, slots=True)
class FoundFeed:
    url: str  # the feed's URL, as the page linked it or as given
    parsed: ParsedFeed
    via: str  # how it was found, for the user


async def find_feed(
    url: str, *, fetcher: Fetcher, timeout: float, now: datetime, language: str | None = None
) -> FoundFeed:
    """The feed at `url`, or the one the page at `url` leads to. Raises FeedError."""
    fetched = await fetcher.fetch(url, timeout=timeout)
    body = fetched.body or b""
    if not looks_like_html(body, fetched.headers.get("content-type")):
        return FoundFeed(url, _parse(url, fetched.headers, body, now, language), "the URL itself")

    linked = feed_links(body, fetched.url)
    keys = {canonical_url(u) for u in linked} | {canonical_url(url), canonical_url(fetched.url)}
    common = [u for u in common_feed_urls(fetched.url) if canonical_url(u) not in keys]
    candidates = [(u, 'the page\'s <link rel="alternate">') for u in linked]
    candidates += [(u, "a common feed path") for u in common]
    problems: list[str] = []
    for candidate, via in candidates[:MAX_CANDIDATES]:
        try:
            got = await fetcher.fetch(candidate, timeout=timeout)
            got_body = got.body or b""
            if looks_like_html(got_body, got.headers.get("content-type")):
                raise ParseError("an HTML page, not a feed")
            parsed = _parse(candidate, got.headers, got_body, now, language)
        except (FetchError, ParseError) as exc:
            if via != "a common feed path":  # guesses that miss are expected, not news
                problems.append(f"{candidate}: {exc.reason}")
            continue
        return FoundFeed(candidate, parsed, via)
    found = (
        f"the page links {len(linked)} feed(s) that failed ({'; '.join(problems)})"
        if linked
        else 'the page has no <link rel="alternate"> to an RSS or Atom feed'
    )
    tried = ", ".join(COMMON_PATHS)
    raise FeedError(f"no feed found at {url}: {found}, and none of {tried} is a feed on its site")


def _parse(
    url: str, headers: dict[str, str], body: bytes, now: datetime, language: str | None
) -> ParsedFeed:
    return parse_document(ParseJob("new", url, body, headers, language, now))
