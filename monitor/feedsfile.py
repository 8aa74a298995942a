"""Edits to feeds.yaml that keep every other byte: add feeds, remove one, write atomically.

ruamel.yaml's round trip (load, change, dump) re-flows text it was not asked to
touch: a plain scalar folded over two lines, like the shipped
topics.ai_entertainment.description, comes back on one line, and a comment after
the last feed travels with a newly appended one. So the edit is made on the text,
guided by ruamel.yaml's round-trip composer, which says where each feed entry
starts and ends; ruamel.yaml's emitter renders a new entry (quoting what needs it);
and the result is validated by load_config before it replaces the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import tempfile
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from monitor.config import Config, load_config
from monitor.errors import ConfigError, ReelwatchError
from monitor.normalize import canonical_url

NAME_MAX = 40  # config allows 64; a name is typed in commands and shown in alerts
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class FeedsFileError(ReelwatchError):
    """feeds.yaml cannot be edited safely as it is written (the message says why)."""


# -- names ---------------------------------------------------------------------------


def slugify(text: str, max_len: int = NAME_MAX) -> str:
    """'The Hollywood Reporter — Roma' -> 'the-hollywood-reporter-roma'; '' when nothing is left."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if len(slug) > max_len:
        cut = slug[:max_len]
        # end at a word when one ends in the second half, never with a hyphen
        slug = (cut[: cut.rindex("-")] if cut.rfind("-") > max_len // 2 else cut).strip("-")
    return slug


def unique_name(base: str, taken: Collection[str]) -> str:
    """base, or base-2, base-3... whichever is not taken (names compare case-insensitively)."""
    lowered = {t.lower() for t in taken}
    base = base or "feed"
    if base.lower() not in lowered:
        return base
    n = 2
    while True:
        suffix = f"-{n}"
        candidate = base[: NAME_MAX - len(suffix)].rstrip("-") + suffix
        if candidate.lower() not in lowered:
            return candidate
        n += 1


def derive_name(title: str | None, fallback: str, taken: Collection[str]) -> str:
    """A unique feed name for a title: kept when it is already a lower-case feed name."""
    title = (title or "").strip()
    base = title if _NAME.match(title) and len(title) <= NAME_MAX else slugify(title)
    return unique_name(base or slugify(fallback) or "feed", taken)


def same_feed_key(url: str) -> str:
    """What two URLs of one feed share: the canonical URL without scheme, www. or a final /.

    Stricter than the config's duplicate check on purpose: adding http://variety.com/feed
    next to https://variety.com/feed/ is a mistake worth refusing.
    """
    canonical = canonical_url(url) or url.strip()
    parts = urlsplit(canonical)
    host = parts.netloc.removeprefix("www.")
    path = parts.path.rstrip("/")
    return f"{host}{path}?{parts.query}" if parts.query else f"{host}{path}"


# -- the text edits (pure) -------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Feeds:
    """Where the feeds: list sits in the text."""

    key: Node | None  # the 'feeds' key; None when the file has no feeds: yet
    value: Node | None
    root_column: int  # column of the top-level keys


def _compose(text: str) -> Node | None:
    try:
        return YAML(typ="rt").compose(text)
    except Exception as exc:  # the caller validated the file; this is belt and braces
        raise FeedsFileError(f"cannot read the YAML: {exc}") from None


def _locate(text: str) -> _Feeds | None:
    root = _compose(text)
    if root is None:
        return None
    if not isinstance(root, MappingNode):
        raise FeedsFileError("the file must be a mapping with feeds: and topics:")
    if root.flow_style:
        raise FeedsFileError("the file is one {...} mapping; write it in block style to edit it")
    for key, value in root.value:
        if isinstance(key, ScalarNode) and key.value == "feeds":
            return _Feeds(key, value, key.start_mark.column)
    return _Feeds(None, None, root.start_mark.column)


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def _line_after(text: str, index: int) -> int:
    """Index just past the line break ending the line that holds `index`."""
    end = text.find("\n", index)
    return len(text) if end == -1 else end + 1


def _text_end(text: str, node: Node, lead: int) -> int:
    """Index just past a node's own text, not the comments and blank lines after it.

    `lead` is where the text leading to the node ends (its key). An empty value
    has no text of its own, and its marks sit at the next token, past any comments
    in between; a block scalar's end takes in the blank lines after it.
    """
    if isinstance(node, MappingNode) and not node.flow_style and node.value:
        key, value = node.value[-1]
        return _text_end(text, value, key.end_mark.index)
    if isinstance(node, SequenceNode) and not node.flow_style and node.value:
        return _text_end(text, node.value[-1], node.value[-1].start_mark.index)
    if node.end_mark.index <= node.start_mark.index:
        return lead
    end = node.end_mark.index
    while end > lead and text[end - 1] in " \t\r\n":
        end -= 1
    return end


def _entry_span(text: str, seq: SequenceNode, item: Node) -> tuple[int, int]:
    """From the start of the line with the entry's dash to the end of its last line.

    Comment lines before the entry (a group's heading) and after it belong to
    what follows; comments between its keys and at the end of its lines are its own.
    """
    dash_col = seq.start_mark.column
    start = _line_start(text, item.start_mark.index)
    while start > 0 and not (
        text[start + dash_col : start + dash_col + 1] == "-"
        and not text[start : start + dash_col].strip()
    ):
        start = _line_start(text, start - 1)
    return start, _line_after(text, _text_end(text, item, item.start_mark.index))


def _block_feeds(located: _Feeds) -> SequenceNode | None:
    value = located.value
    if isinstance(value, SequenceNode) and value.value:
        if value.flow_style:
            raise FeedsFileError(
                "feeds: is written as one [...] list; write it as a block list "
                "(one '- name: ...' entry per feed) to edit it"
            )
        return value
    if value is None or isinstance(value, SequenceNode) or value.tag.endswith(":null"):
        return None  # absent, empty or []: the first entry starts the list
    raise FeedsFileError("feeds: must be a list")


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def render_entry(entry: Mapping[str, Any], dash_col: int = 2, key_col: int = 4) -> str:
    """One '- name: ...' entry, indented like the file's others; tags as [a, b]."""
    data = CommentedMap()
    for key, value in entry.items():
        if value is None or value == []:
            continue
        if isinstance(value, list | tuple):
            value = CommentedSeq(value)
            value.fa.set_flow_style()
        data[key] = value
    yaml = YAML(typ="rt")
    yaml.width = 4096  # one line per key, however long the URL
    out = io.StringIO()
    yaml.dump(data, out)
    lines = out.getvalue().splitlines()
    first = " " * dash_col + "-" + " " * max(1, key_col - dash_col - 1)
    return "".join(
        (first if i == 0 else " " * key_col) + line + "\n" for i, line in enumerate(lines)
    )


def add_entries(text: str, entries: Sequence[Mapping[str, Any]]) -> str:
    """The text with `entries` appended to feeds:, every other byte as it was."""
    if not entries:
        return text
    nl = _newline(text)
    located = _locate(text)
    seq = _block_feeds(located) if located and located.key is not None else None
    if seq is not None:
        last = seq.value[-1]
        dash_col, key_col = seq.start_mark.column, last.start_mark.column
        _, at = _entry_span(text, seq, last)
        block = "".join(render_entry(e, dash_col, key_col) for e in entries)
        before = text[:at] if text[:at].endswith("\n") else text[:at] + nl
        return before + block.replace("\n", nl) + text[at:]
    root_col = located.root_column if located else 0
    block = "".join(render_entry(e, root_col + 2, root_col + 4) for e in entries)
    if located is None or located.key is None:  # no feeds: yet: a new section at the end
        head = text if not text or text.endswith("\n") else text + nl
        return head + " " * root_col + "feeds:" + nl + block.replace("\n", nl)
    value = located.value
    if value is not None and value.end_mark.index > value.start_mark.index:  # [] or ~
        text = text[: value.start_mark.index].rstrip(" \t") + text[value.end_mark.index :]
    at = _line_after(text, located.key.end_mark.index)
    before = text[:at] if text[:at].endswith("\n") else text[:at] + nl
    return before + block.replace("\n", nl) + text[at:]


def remove_entry(text: str, name: str) -> str:
    """The text without the feed named `name`; comments of the other entries untouched."""
    located = _locate(text)
    seq = _block_feeds(located) if located and located.key is not None else None
    for item in seq.value if seq else ():
        if not isinstance(item, MappingNode):
            continue
        names = [v.value for k, v in item.value if getattr(k, "value", None) == "name"]
        if names and names[0] == name:
            start, end = _entry_span(text, seq, item)  # type: ignore[arg-type]
            text = text[:start] + text[end:]
            if len(seq.value) == 1:  # an empty block list would be null: say []
                key_end = located.key.end_mark.index  # type: ignore[union-attr]
                colon = text.index(":", key_end) + 1
                text = text[:colon] + " []" + text[colon:]
            return text
    raise FeedsFileError(f"no feed named {name!r} in the file")


# -- the file (I/O) --------------------------------------------------------------------


def read_feeds_file(path: str | os.PathLike[str]) -> tuple[str, Config]:
    """The file's exact text (line endings kept) and its validated config (an empty
    file is one to add feeds to)."""
    config = load_config(path, empty_ok=True)
    with open(path, encoding="utf-8", newline="") as f:
        return f.read(), config


def write_feeds_file(path: str | os.PathLike[str], text: str, *, expected: str) -> Config:
    """Replace the file with `text` when it validates, atomically; else change nothing.

    `expected` is the text the edit started from: when someone changed the file
    meanwhile, their change is not overwritten.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            config = load_config(tmp)  # exactly the bytes that will be renamed into place
        except ConfigError as exc:
            problems = [dataclasses.replace(p, file=str(path)) for p in exc.problems]
            raise ConfigError(problems or str(exc).replace(tmp, str(path))) from None
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        with open(path, encoding="utf-8", newline="") as f:
            if f.read() != expected:
                raise FeedsFileError(f"{path} changed while it was being edited: try again")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return config
