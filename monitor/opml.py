"""OPML 2.0 subscription lists: read what feed readers export, write what they import.

Pure: bytes in, feeds out, and back. Folders (an outline without xmlUrl that
holds outlines) are tags; a feed with several tags sits in its first tag's
folder and lists them all in `category`, so export -> import gives the same tags.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit

from monitor.errors import ReelwatchError
from monitor.feedsfile import derive_name, same_feed_key
from monitor.normalize import is_http_url, language_code

MAX_OPML_BYTES = 5 * 1024 * 1024
# stdlib expat expands internal entities (a billion laughs fits in 1 KB): OPML never
# needs a DTD, so any declaration refuses the file before the parser sees it.
_DTD = re.compile(rb"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)


class OpmlError(ReelwatchError):
    """The file is not an OPML subscription list we can read."""


@dataclass(frozen=True, slots=True)
class OpmlFeed:
    title: str  # the outline's title, else its text ('' when it has neither)
    url: str  # xmlUrl, as written
    html_url: str | None = None
    tags: tuple[str, ...] = ()  # enclosing folders, outermost first, then its categories
    language: str | None = None  # ISO 639-1, when the outline says


def parse_opml(data: bytes) -> list[OpmlFeed]:
    """Every outline with an xmlUrl, in document order. Raises OpmlError."""
    if len(data) > MAX_OPML_BYTES:
        raise OpmlError(f"too large ({len(data):,} bytes; at most {MAX_OPML_BYTES:,})")
    # UTF-16 interleaves NULs with the markup: dropping them lets one check cover it
    if _DTD.search(data.replace(b"\x00", b"")):
        raise OpmlError(
            "refused: the file declares a DTD or entities (<!DOCTYPE> / <!ENTITY>), "
            "which OPML never needs and which can expand to gigabytes"
        )
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise OpmlError(f"not well-formed XML: {exc}") from None
    if _local(root.tag) != "opml":
        raise OpmlError(f"not OPML: the document is <{_local(root.tag)}>, not <opml>")
    body = next((child for child in root if _local(child.tag) == "body"), None)
    if body is None:
        raise OpmlError("not OPML: there is no <body>")
    return list(_walk(body, ()))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].lower()


def _attrs(element: ET.Element) -> dict[str, str]:
    # readers disagree on case (xmlUrl, xmlurl, XMLURL)
    return {_local(k): v.strip() for k, v in element.attrib.items()}


def _walk(parent: ET.Element, folders: tuple[str, ...]) -> Iterator[OpmlFeed]:
    for outline in parent:
        if _local(outline.tag) != "outline":
            continue
        a = _attrs(outline)
        title = a.get("title") or a.get("text") or ""
        if a.get("xmlurl"):
            categories = _categories(a.get("category", ""))
            yield OpmlFeed(
                title=title,
                url=a["xmlurl"],
                html_url=a.get("htmlurl") or None,
                tags=tuple(dict.fromkeys((*folders, *categories))),
                language=language_code(a.get("language")) if a.get("language") else None,
            )
        else:  # a folder; an outline that is neither folder nor feed yields nothing
            yield from _walk(outline, (*folders, title) if title else folders)


def _categories(value: str) -> list[str]:
    # OPML 2.0: comma-separated, each a tag or a path from the root ("/Film/Festivals")
    out = []
    for category in (c.strip() for c in value.split(",")):
        if category.startswith("/"):
            out += [part.strip() for part in category.split("/") if part.strip()]
        elif category:
            out.append(category)
    return out


@dataclass(frozen=True, slots=True)
class ExportFeed:
    name: str
    url: str
    tags: tuple[str, ...] = ()
    language: str | None = None


def render_opml(feeds: Sequence[ExportFeed], *, title: str, created: datetime) -> bytes:
    """OPML 2.0: one folder per first tag, in order of first appearance; untagged feeds last."""
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = title
    ET.SubElement(head, "dateCreated").text = format_datetime(created)
    body = ET.SubElement(root, "body")
    folders: dict[str, ET.Element] = {}
    for feed in feeds:
        if feed.tags and feed.tags[0] not in folders:
            first = feed.tags[0]
            folders[first] = ET.SubElement(body, "outline", text=first, title=first)
    for feed in feeds:
        parent = folders[feed.tags[0]] if feed.tags else None
        if parent is None:
            continue
        _feed_outline(parent, feed)
    for feed in feeds:
        if not feed.tags:
            _feed_outline(body, feed)
    ET.indent(root, space="  ")
    text = ET.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{text}\n'.encode()


def _feed_outline(parent: ET.Element, feed: ExportFeed) -> None:
    attrs = {"type": "rss", "text": feed.name, "title": feed.name, "xmlUrl": feed.url}
    if len(feed.tags) > 1:
        attrs["category"] = ",".join(feed.tags)
    if feed.language:
        attrs["language"] = feed.language
    ET.SubElement(parent, "outline", attrs)


@dataclass(frozen=True, slots=True)
class ImportPlan:
    added: tuple[dict[str, Any], ...]  # feeds.yaml entries, in the file's order
    skipped: tuple[tuple[OpmlFeed, str], ...]  # and why each was left out


def plan_import(feeds: Sequence[OpmlFeed], existing: Sequence[tuple[str, str]]) -> ImportPlan:
    """What to add to a feeds.yaml holding `existing` (name, url) feeds: the outlines it lacks.

    Feeds compare by URL (see same_feed_key). Names come from each outline's title
    (or text), made unique against the file and each other. A feed listed in
    several folders, as Feedly exports one in two categories, is added once with
    every folder's tags.
    """
    names = [name for name, _ in existing]
    present = {same_feed_key(url): name for name, url in existing}
    planned: dict[str, dict[str, Any]] = {}
    skipped: list[tuple[OpmlFeed, str]] = []
    for feed in feeds:
        if not is_http_url(feed.url):
            skipped.append((feed, "not an http:// or https:// URL"))
            continue
        key = same_feed_key(feed.url)
        if key in present:
            skipped.append((feed, f"already in feeds.yaml as {present[key]!r}"))
            continue
        if key in planned:
            entry = planned[key]
            tags = list(dict.fromkeys([*entry.get("tags", []), *feed.tags]))
            if tags:
                entry["tags"] = tags
            continue
        name = derive_name(feed.title, urlsplit(feed.url).hostname or "", names)
        names.append(name)
        entry = {"name": name, "url": feed.url}
        if feed.language:
            entry["language"] = feed.language
        if feed.tags:
            entry["tags"] = list(feed.tags)
        planned[key] = entry
    return ImportPlan(tuple(planned.values()), tuple(skipped))
