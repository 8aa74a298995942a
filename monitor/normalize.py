"""Pure normalisation of what feeds say: URLs, text, dates, language codes.

No I/O, no clock: callers pass `now`.
"""

from __future__ import annotations

import html
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

# Query parameters that only track the reader; dropping them makes the same
# article reached from a newsletter and from the feed one URL.
_TRACKING_PARAMS = {"fbclid", "gclid", "dclid", "msclkid", "mc_cid", "mc_eid", "igshid", "_hsenc"}
_DEFAULT_PORTS = {"http": 80, "https": 443}

# Bidi overrides and isolates can make a title display as something else
# ("moc.elgoog" trick); zero-width characters hide text from keyword matching.
_INVISIBLE = "".join(
    map(chr, (
        0x200B, 0x200C, 0x200D, 0x200E, 0x200F, 0x2060, 0xFEFF, 0x061C,
        *range(0x202A, 0x202F),  # LRE, RLE, PDF, LRO, RLO
        *range(0x2066, 0x206A),  # LRI, RLI, FSI, PDI
    ))
)  # fmt: skip
_INVISIBLE_CHARS = re.compile(f"[{_INVISIBLE}]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# In a URL: tab and newlines are dropped (as browsers do); other controls and the
# invisible characters above are percent-encoded, so a link can neither hide a NUL
# (which PostgreSQL refuses) nor display reversed.
_URL_DROPPED = re.compile(r"[\t\n\r]")
_URL_ESCAPED = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff\u061c]"
)
_ENTITY = re.compile(r"&(#\d+|#x[0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]{1,31});")

TITLE_MAX = 500
SUMMARY_MAX = 2_000
# HTML beyond this is not read at all: a 5 MB title must cost no more than a short one.
_HTML_READ_MAX = 100_000

# A published date before this, or more than a day ahead of now, is a feed bug
# (epoch zero, 1900, 9999); the item is dated when we first saw it instead.
_EARLIEST_PLAUSIBLE = datetime(1995, 1, 1, tzinfo=UTC)


def is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


# A URL canonical_url would give back as it is (a lower-case host, no port, no user,
# printable ASCII, a query of plain name=value pairs): most links feeds give. urllib's
# split, query parsing and re-encoding cost ten times the check.
_PLAIN_URL = re.compile(
    r"https?://[a-z0-9-]+(?:\.[a-z0-9-]+)*(/[\x21\x22\x24-\x3e\x40-\x7e]*)?"
    r"(?:\?([\w.~-]+=[\w.~-]*(?:&[\w.~-]+=[\w.~-]*)*))?",
    re.ASCII,
)


def canonical_url(url: str | None) -> str | None:
    """The URL two copies of one article share; None when it is not an http(s) URL."""
    if not url:
        return None
    url = url.strip()
    if (plain := _PLAIN_URL.fullmatch(url)) is not None:
        path, query = plain.groups()
        if not query or not any(_tracking(p.partition("=")[0]) for p in query.split("&")):
            return url if path else url.replace("?", "/?", 1) if query else url + "/"
    return _canonical_url(url)


def _tracking(param: str) -> bool:
    param = param.lower()
    return param.startswith("utm_") or param in _TRACKING_PARAMS


def _canonical_url(url: str) -> str | None:
    url = _URL_DROPPED.sub("", url)
    url = _URL_ESCAPED.sub(lambda m: quote(m.group(), safe=""), url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower().rstrip(".")
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _tracking(k)]
    path = parts.path or "/"
    return urlunsplit((scheme, netloc, path, urlencode(query, doseq=True), ""))


def shown_url(url: str) -> str:
    """A URL as logs, notices and listings show it: a password in it (an intranet feed's
    https://user:password@host/feed) replaced by ***."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


# Feed HTML only needs reducing to text, never rendering: regular expressions do it
# several times faster than an HTML parser, and what they leave is escaped on output.
_INVISIBLE_ELEMENTS = re.compile(
    r"<(script|style|template|noscript|iframe|object|svg|math)\b.*?</\1\s*>", re.I | re.S
)
_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.S)
_TAG = re.compile(r"</?[A-Za-z!?][^>]*>?")


def html_to_text(fragment: str) -> str:
    """Text of an HTML fragment: tags removed (block or inline, each leaves a space)."""
    fragment = fragment[:_HTML_READ_MAX]
    if "<" not in fragment:
        return fragment
    fragment = _INVISIBLE_ELEMENTS.sub(" ", fragment)
    fragment = _COMMENT.sub(" ", fragment)
    return _TAG.sub(" ", fragment)


def clean_text(value: str | None, limit: int) -> str:
    """Plain, single-line, safe text from a feed field that may hold HTML."""
    if not value:
        return ""
    text = _blank(html_to_text(value))
    refold = False
    # Entities are decoded after the tags are gone; feeds double- and triple-escape
    # them ("&amp;amp;" survives one parse as "&amp;").
    if "&" in text and _ENTITY.search(text):
        text = text[: 8 * limit]  # decoding only shortens it; feeds carry whole articles
        for _ in range(4):
            if not _ENTITY.search(text):
                break
            text = html.unescape(text)
        if "<" in text:  # markup that was escaped once too often: "&lt;b&gt;AI&lt;/b&gt;"
            text = html_to_text(text)
        refold = True
    if not text.isascii():
        if _INVISIBLE_CHARS.search(text):
            text = _INVISIBLE_CHARS.sub("", text)
            refold = True
        text = unicodedata.normalize("NFC", text)
    if refold:
        text = _blank(text)
    if len(text) > limit:
        cut = text.rfind(" ", 0, limit - 1)
        text = text[: cut if cut > limit // 2 else limit - 1].rstrip() + "…"
    return text


def _blank(text: str) -> str:
    """Control characters and runs of whitespace as one space, none at the ends."""
    if _CONTROL.search(text):
        text = _CONTROL.sub(" ", text)
    return " ".join(text.split())


def clean_identifier(value: str | None, limit: int) -> str:
    """An identifier (a guid) as given, less control and invisible characters."""
    if not value:
        return ""
    return _CONTROL.sub("", _INVISIBLE_CHARS.sub("", value)).strip()[:limit]


def plausible_published(candidate: datetime | None, now: datetime) -> datetime:
    """The candidate as UTC, or `now` when it is missing or absurd."""
    if candidate is None:
        return now
    if candidate.tzinfo is None:
        candidate = candidate.replace(tzinfo=UTC)
    candidate = candidate.astimezone(UTC)
    if candidate < _EARLIEST_PLAUSIBLE or candidate > now + timedelta(days=1):
        return now
    return candidate


_LANG = re.compile(r"^([A-Za-z]{2})(?:[-_][A-Za-z0-9]{1,8})*$")


# ISO 639-1: the two-letter codes feeds and feeds.yaml name languages by
ISO_639_1 = frozenset(
    "aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu "
    "cv cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi "
    "ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks "
    "ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl "
    "nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl "
    "sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve "
    "vi vo wa wo xh yi yo za zh zu".split()
)
# codes people write for a country or an old standard, and the language's code
LANGUAGE_SLIPS = {"jp": "ja", "cn": "zh", "gr": "el", "dk": "da", "cz": "cs", "ua": "uk",
                  "iw": "he", "in": "id", "ji": "yi", "gb": "en", "us": "en"}  # fmt: skip


def language_code(value: str | None) -> str | None:
    """ISO 639-1 code from a language tag ('en-US' -> 'en'); None when it is not one."""
    if not value:
        return None
    match = _LANG.match(value.strip())
    if not match:
        return None
    code = match.group(1).lower()
    code = LANGUAGE_SLIPS.get(code, code) if code in ("iw", "in", "ji") else code
    return code if code in ISO_639_1 else None
