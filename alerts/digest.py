"""Email digests: choose a period, build its content, render it (pure); send over SMTP (I/O).

    period_before(schedule, now) | repo.claim_digest | repo.items_seen_between | build_digest
      | render_digest | build_message | send_email | repo.finish_digest

Feed text is data: the HTML template autoescapes every field, links are http(s) only,
and no feed text ever reaches a mail header (the subject is made of configuration,
dates and counts; header_safe() still strips CR/LF and encoded words from it).
The digests table, not the scheduler's memory, records what was sent: a period is
sent once, and one missed while the service was down is sent when it starts again.
"""

from __future__ import annotations

import email.policy
import email.utils
import logging
import os
import re
import smtplib
import ssl
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from monitor.errors import DeliveryError
from monitor.normalize import is_http_url
from monitor.stories import story_words
from monitor.types import Match

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
SNIPPET_MAX = 280
TERMS_MAX = 6
MOST_COVERED = 3
# seconds between tries of a digest an SMTP server could not take; then every 6 h until
# it does, for GIVE_UP_AFTER (a server down over a weekend costs no digest, nor does a
# wrong password corrected within that time; refusals of the message itself fail it at once)
RETRY_DELAYS = (60, 300, 900, 3600, 3 * 3600, 6 * 3600)
# a period still not sent this long after it ended is given up: failed, logged as an
# error (a recipient whose server answers 4xx for good would keep it retrying forever)
GIVE_UP_AFTER = timedelta(days=14)

# Template wording per digest language (feeds.yaml digests.NAME.language).
LABELS: dict[str, dict[str, str]] = {
    "en": {
        "items": "stories", "outlets": "outlets", "period": "Period", "topic": "Topic",
        "this": "This period", "previous": "Previous", "change": "Change",
        "doubled": "doubled", "new": "new", "most_covered": "Most covered",
        "reported_by": "reported by", "health": "Feed health", "healthy": "all {n} feeds healthy",
        "attention": "{n} of {total} feeds need attention", "why": "why",
        "quiet": "A quiet week: no new stories between {start} and {end}.",
        "other": "Other stories", "footer": "Sent by reelwatch. Edit digests in feeds.yaml.",
    },
    "it": {
        "items": "notizie", "outlets": "testate", "period": "Periodo", "topic": "Tema",
        "this": "Questo periodo", "previous": "Precedente", "change": "Variazione",
        "doubled": "raddoppiato", "new": "nuovo", "most_covered": "Le più riprese",
        "reported_by": "riportata da", "health": "Stato dei feed",
        "healthy": "tutti i {n} feed funzionano",
        "attention": "{n} feed su {total} da controllare", "why": "perché",
        "quiet": "Settimana tranquilla: nessuna notizia nuova tra il {start} e il {end}.",
        "other": "Altre notizie",
        "footer": "Inviato da reelwatch. I digest si configurano in feeds.yaml.",
    },
    "es": {
        "items": "noticias", "outlets": "medios", "period": "Periodo", "topic": "Tema",
        "this": "Este periodo", "previous": "Anterior", "change": "Cambio",
        "doubled": "se duplicó", "new": "nuevo", "most_covered": "Lo más cubierto",
        "reported_by": "publicada por", "health": "Estado de los feeds",
        "healthy": "los {n} feeds funcionan",
        "attention": "{n} de {total} feeds requieren atención",
        "why": "por qué",
        "quiet": "Semana tranquila: ninguna noticia nueva entre el {start} y el {end}.",
        "other": "Otras noticias",
        "footer": "Enviado por reelwatch. Los resúmenes se configuran en feeds.yaml.",
    },
    "fr": {
        "items": "articles", "outlets": "médias", "period": "Période", "topic": "Thème",
        "this": "Cette période", "previous": "Précédente", "change": "Évolution",
        "doubled": "doublé", "new": "nouveau", "most_covered": "Les plus couverts",
        "reported_by": "repris par", "health": "État des flux",
        "healthy": "les {n} flux fonctionnent", "attention": "{n} flux sur {total} à vérifier",
        "why": "pourquoi",
        "quiet": "Semaine calme : aucun nouvel article entre le {start} et le {end}.",
        "other": "Autres articles",
        "footer": "Envoyé par reelwatch. Les digests se règlent dans feeds.yaml.",
    },
    "de": {
        "items": "Meldungen", "outlets": "Medien", "period": "Zeitraum", "topic": "Thema",
        "this": "Dieser Zeitraum", "previous": "Vorher", "change": "Veränderung",
        "doubled": "verdoppelt", "new": "neu", "most_covered": "Am meisten berichtet",
        "reported_by": "berichtet von", "health": "Feed-Status",
        "healthy": "alle {n} Feeds in Ordnung", "attention": "{n} von {total} Feeds prüfen",
        "why": "warum",
        "quiet": "Eine ruhige Woche: keine neuen Meldungen zwischen {start} und {end}.",
        "other": "Weitere Meldungen",
        "footer": "Gesendet von reelwatch. Digests werden in feeds.yaml eingestellt.",
    },
}  # fmt: skip


# -- periods ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive

    def previous(self) -> Period:
        return Period(self.start - (self.end - self.start), self.start)


def period_before(schedule: str, timezone: str, now: datetime) -> Period:
    """The last complete period of a cron schedule: between its last two run times <= now."""
    from apscheduler.triggers.cron import CronTrigger

    tz = ZoneInfo(timezone)
    trigger = CronTrigger.from_crontab(schedule, timezone=tz)
    for lookback in (timedelta(days=2), timedelta(days=8), timedelta(days=40), timedelta(days=400)):
        fires: list[datetime] = []
        t = trigger.get_next_fire_time(None, now - lookback)
        while t is not None and t <= now:
            fires = [*fires[-1:], t]
            t = trigger.get_next_fire_time(t, t + timedelta(seconds=1))
        if len(fires) == 2:
            return Period(
                fires[0].astimezone(ZoneInfo("UTC")), fires[1].astimezone(ZoneInfo("UTC"))
            )
    raise ValueError(f"the schedule '{schedule}' has not run twice in the last 400 days")


_DATES = re.compile(r"^(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})$")


def parse_period(text: str, schedule: str, timezone: str, now: datetime) -> Period:
    """`last-week` (the last complete scheduled period) or `YYYY-MM-DD..YYYY-MM-DD`
    (whole days in the digest's timezone, both included)."""
    if text in ("last-week", "last"):
        return period_before(schedule, timezone, now)
    m = _DATES.match(text.strip())
    if not m:
        raise ValueError(f"'{text}' is not last-week or a range like 2026-11-16..2026-11-22")
    try:
        first, last = date.fromisoformat(m[1]), date.fromisoformat(m[2])
    except ValueError as exc:
        raise ValueError(f"'{text}': {exc}") from None
    if last < first:
        raise ValueError(f"'{text}': the range ends before it starts")
    tz = ZoneInfo(timezone)
    utc = ZoneInfo("UTC")
    start = datetime(first.year, first.month, first.day, tzinfo=tz).astimezone(utc)
    after = last + timedelta(days=1)
    return Period(start, datetime(after.year, after.month, after.day, tzinfo=tz).astimezone(utc))


# -- content (pure) --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigestSource:
    """One stored item as the digest needs it (storage's StoredItem, reduced)."""

    feed: str
    title: str
    url: str | None
    summary: str
    language: str | None
    first_seen: datetime
    matches: tuple[Match, ...]
    story: int | None = None  # the stored story it belongs to, when known


@dataclass(frozen=True, slots=True)
class Entry:
    title: str
    url: str | None  # http(s) only
    outlet: str
    when: str
    language: str
    snippet: str
    terms: tuple[str, ...]
    also: tuple[str, ...]  # other outlets that carried the same story
    score: float
    languages: tuple[str, ...] = ()  # every language the story was reported in


@dataclass(frozen=True, slots=True)
class TopicCount:
    topic: str
    label: str
    count: int
    previous: int
    flag: str | None  # "doubled" | "new" | None


@dataclass(frozen=True, slots=True)
class Section:
    topic: str
    label: str
    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class DigestContent:
    name: str
    title: str
    language: str
    start: datetime  # local, for display
    end: datetime  # local, last moment included
    stories: int
    items: int
    outlets: int
    counts: tuple[TopicCount, ...]
    most_covered: tuple[Entry, ...]
    sections: tuple[Section, ...]
    health: str
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def quiet(self) -> bool:
        return self.items == 0


def safe_url(url: str | None) -> str | None:
    if not url or not is_http_url(url) or any(c in url for c in "\"'<> \r\n\t\\"):
        return None
    return url


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",.;:") + "…"


def group_stories(sources: Sequence[DigestSource]) -> list[list[DigestSource]]:
    """Items that report one story: the stored story when known, else the same link or
    titles sharing most of their words."""
    groups: list[tuple[frozenset[str], set[str], list[DigestSource]]] = []
    by_story: dict[int, list[DigestSource]] = {}
    for src in sources:
        if src.story is not None:
            if src.story in by_story:
                by_story[src.story].append(src)
                continue
            by_story[src.story] = [src]
            groups.append((frozenset(), set(), by_story[src.story]))
            continue
        tokens = story_words(src.title)
        for rep, urls, members in groups:
            same_url = src.url is not None and src.url in urls
            overlap = len(tokens & rep) / len(tokens | rep) if tokens and rep else 0.0
            if same_url or overlap >= 0.5:
                members.append(src)
                if src.url:
                    urls.add(src.url)
                break
        else:
            groups.append((tokens, {src.url} if src.url else set(), [src]))
    return [members for _, _, members in groups]


def build_digest(
    *,
    name: str,
    language: str,
    timezone: str,
    period: Period,
    sources: Sequence[DigestSource],
    labels: Mapping[str, str],  # topic id -> label, in feeds.yaml order
    gate: str | None,
    counts: Mapping[str, int],
    previous_counts: Mapping[str, int],
    health: Mapping[str, Sequence[str]],  # flagged feeds only
    feeds_total: int,
    title: str = "AI in entertainment",
) -> DigestContent:
    words = LABELS.get(language, LABELS["en"])
    tz = ZoneInfo(timezone)
    stories = group_stories(sorted(sources, key=lambda s: -_score(s)))
    entries: list[tuple[str, Entry]] = []
    for members in stories:
        lead = members[0]  # the best-scored report of the story leads it
        also = tuple(dict.fromkeys(m.feed for m in members[1:] if m.feed != lead.feed))
        languages = tuple(dict.fromkeys(m.language for m in members if m.language))
        entry = replace(_entry(lead, also, tz), languages=languages)
        entries.append((_section_of(lead, gate), entry))
    rank = sorted(entries, key=lambda te: (-len(te[1].also), -te[1].score))
    most = tuple(e for _, e in rank if e.also)[:MOST_COVERED]
    sections = []
    order = [*labels, None]
    for topic in order:
        chosen = tuple(e for t, e in rank if t == topic)
        if chosen:
            label = labels.get(topic, words["other"]) if topic else words["other"]
            sections.append(Section(topic or "", label, chosen))
    sections.sort(key=lambda s: -len(s.entries))
    table = []
    for topic, label in labels.items():
        now_n, before = counts.get(topic, 0), previous_counts.get(topic, 0)
        if not now_n and not before:
            continue
        flag = None
        if before and now_n >= 2 * before and now_n >= 3:
            flag = "doubled"
        elif not before and now_n >= 3:
            flag = "new"
        table.append(TopicCount(topic, label, now_n, before, flag))
    table.sort(key=lambda c: (-c.count, c.label))
    if health:
        flagged = ", ".join(
            f"{feed} ({'; '.join(flags)})" for feed, flags in sorted(health.items())
        )
        health_line = f"{words['attention'].format(n=len(health), total=feeds_total)}: {flagged}"
    else:
        health_line = words["healthy"].format(n=feeds_total)
    return DigestContent(
        name=name, title=title, language=language,
        start=period.start.astimezone(tz), end=(period.end - timedelta(seconds=1)).astimezone(tz),
        stories=len(stories), items=len(sources),
        outlets=len({s.feed for s in sources}), counts=tuple(table), most_covered=most,
        sections=tuple(sections), health=health_line, labels=words,
    )  # fmt: skip


def _score(src: DigestSource) -> float:
    return max((m.score for m in src.matches), default=0.0)


def _section_of(src: DigestSource, gate: str | None) -> str | None:
    # an item sits under its best-scored topic other than the gate (which every item has)
    subs = [m for m in src.matches if m.topic != gate]
    if not subs:
        return None
    return max(subs, key=lambda m: m.score).topic


def _entry(src: DigestSource, also: tuple[str, ...], tz: ZoneInfo) -> Entry:
    terms = tuple(dict.fromkeys(t for m in src.matches for t in m.terms))[:TERMS_MAX]
    return Entry(
        title=_cut(src.title, 300) or "(untitled)",
        url=safe_url(src.url),
        outlet=src.feed,
        when=src.first_seen.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
        language=src.language or "",
        snippet=_cut(src.summary, SNIPPET_MAX),
        terms=terms,
        also=also,
        score=_score(src),
    )


# -- rendering (pure) ------------------------------------------------------------------------


def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        # HTML templates escape every value; the text template has nothing to escape
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_digest(content: DigestContent) -> tuple[str, str]:
    """(plain text, HTML with its CSS inlined so Gmail and Outlook show it as designed)."""
    import css_inline

    env = _environment()
    text = env.get_template("digest.txt").render(d=content, L=content.labels)
    html = env.get_template("digest.html").render(d=content, L=content.labels)
    return text, css_inline.inline(html)


def format_subject(template: str, *, name: str, period: Period, timezone: str, count: int) -> str:
    tz = ZoneInfo(timezone)
    start = period.start.astimezone(tz)
    end = (period.end - timedelta(seconds=1)).astimezone(tz)
    return header_safe(template.format(start=start, end=end, count=count, name=name))


_ENCODED_WORD = re.compile(r"=\?", re.ASCII)


def header_safe(text: str, limit: int = 200) -> str:
    """One line of plain text for a header: no CR/LF or other control characters (no
    header injection), no encoded words (=?utf-8?q?...?=, CVE-2024-6923)."""
    cleaned = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text
    )
    cleaned = _ENCODED_WORD.sub("= ?", " ".join(cleaned.split()))
    return cleaned[:limit]


def build_message(
    *,
    sender: str,
    recipients: Sequence[str],
    subject: str,
    text: str,
    html: str,
    now: datetime,
) -> EmailMessage:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["Subject"] = header_safe(subject)
    msg["From"] = header_safe(sender)
    msg["To"] = ", ".join(header_safe(r) for r in recipients)
    msg["Date"] = email.utils.format_datetime(now)
    domain = sender.rsplit("@", 1)[-1].strip(" >") or "reelwatch.invalid"
    msg["Message-ID"] = email.utils.make_msgid("reelwatch", domain=domain)
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg


# -- SMTP (I/O) ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)  # never printed or logged
    security: str = "starttls"  # starttls (when offered) | ssl | none
    ca_file: str | None = None
    timeout: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SmtpSettings:
        env = os.environ if env is None else env
        host = env.get("REELWATCH_SMTP_HOST", "").strip()
        sender = env.get("REELWATCH_SMTP_FROM", "").strip()
        missing = [k for k, v in (("REELWATCH_SMTP_HOST", host), ("REELWATCH_SMTP_FROM", sender))
                   if not v]  # fmt: skip
        if missing:
            raise DeliveryError(f"email is not set up: set {' and '.join(missing)}", permanent=True)
        security = env.get("REELWATCH_SMTP_SECURITY", "starttls").strip().lower() or "starttls"
        if security not in ("starttls", "ssl", "none"):
            raise DeliveryError(
                f"REELWATCH_SMTP_SECURITY='{security}': use starttls, ssl or none", permanent=True
            )
        port_text = env.get("REELWATCH_SMTP_PORT", "").strip()
        try:
            port = int(port_text) if port_text else (465 if security == "ssl" else 587)
        except ValueError:
            raise DeliveryError(
                f"REELWATCH_SMTP_PORT='{port_text}' is not a port number", permanent=True
            ) from None
        return cls(
            host=host, port=port, sender=sender,
            user=env.get("REELWATCH_SMTP_USER") or None,
            password=env.get("REELWATCH_SMTP_PASSWORD") or None,
            security=security, ca_file=env.get("REELWATCH_SMTP_CA_FILE") or None,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class SendOutcome:
    accepted: tuple[str, ...]
    temporary: Mapping[str, str]  # recipient -> the server's 4xx answer: retry later
    permanent: Mapping[str, str]  # recipient -> the server's 5xx answer: a person must act


def send_email(settings: SmtpSettings, msg: EmailMessage, recipients: Sequence[str]) -> SendOutcome:
    """Send one message; the server's refusal of some recipients does not stop the others.
    Raises DeliveryError (permanent or not) when nothing could be sent."""
    where = f"SMTP server {settings.host}:{settings.port}"
    context = ssl.create_default_context(cafile=settings.ca_file)
    refused: dict[str, tuple[int, bytes]] = {}
    try:
        if settings.security == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                settings.host, settings.port, timeout=settings.timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        with smtp:
            smtp.ehlo()
            if settings.security == "starttls" and smtp.has_extn("starttls"):
                smtp.starttls(context=context)
                smtp.ehlo()
            if settings.user:
                smtp.login(settings.user, settings.password or "")
            try:
                refused = dict(smtp.send_message(msg, settings.sender, list(recipients)))
            except smtplib.SMTPRecipientsRefused as exc:
                refused = dict(exc.recipients)
    except smtplib.SMTPAuthenticationError as exc:
        # a person must fix it, but the period is kept owed (retried with backoff until
        # GIVE_UP_AFTER): once the password is corrected and the service restarted, the
        # digest goes out without anyone having to know about --force
        raise DeliveryError(
            f"{where} refused the login of user '{settings.user}': {_answer(exc)} "
            "(check REELWATCH_SMTP_USER and REELWATCH_SMTP_PASSWORD, then restart)",
            permanent=False,
        ) from None
    except smtplib.SMTPNotSupportedError:
        raise DeliveryError(
            f"{where} does not offer AUTH: unset REELWATCH_SMTP_USER, or use "
            "REELWATCH_SMTP_SECURITY=starttls or ssl if it offers AUTH only over TLS",
            permanent=True,
        ) from None
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(
            f"{where} refused the message: {_answer(exc)}", permanent=exc.smtp_code >= 500
        ) from None
    except ssl.SSLError as exc:
        raise DeliveryError(f"{where}: TLS failed: {exc}", permanent=False) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(f"cannot reach {where}: {exc}", permanent=False) from None
    temporary = {r: _answer_of(c, m) for r, (c, m) in refused.items() if c < 500}
    permanent = {r: _answer_of(c, m) for r, (c, m) in refused.items() if c >= 500}
    accepted = tuple(r for r in recipients if r not in refused)
    return SendOutcome(accepted, temporary, permanent)


def _answer(exc: smtplib.SMTPResponseException) -> str:
    return _answer_of(exc.smtp_code, exc.smtp_error)


def _answer_of(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return f"{code} {' '.join(text.split())}"[:300]


def retry_delay(attempts: int) -> timedelta:
    """How long to wait after `attempts` failed tries."""
    return timedelta(seconds=RETRY_DELAYS[max(1, min(attempts, len(RETRY_DELAYS))) - 1])


# -- one digest, end to end (storage + SMTP) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigestResult:
    status: str  # sent | partial | retry | failed | already-sent | busy | dry-run
    message: str
    period: Period
    subject: str = ""
    text: str = ""
    html: str = ""


@dataclass(frozen=True, slots=True)
class DigestSetup:
    """What a digest needs from feeds.yaml and the feeds' state, as plain values."""

    name: str
    to: tuple[str, ...]
    topics: tuple[str, ...]  # empty: every relevant item
    schedule: str
    timezone: str
    subject: str
    language: str
    topic_labels: Mapping[str, str]  # assigned topics, in feeds.yaml order
    gate: str | None
    health: Mapping[str, Sequence[str]]
    feeds_total: int


def render_period(repo: Any, setup: DigestSetup, period: Period) -> tuple[str, str, str, int]:
    """(subject, text, html, items) of a digest for a period, from storage."""
    stored = repo.items_seen_between(period.start, period.end, setup.topics or None)
    stories = repo.story_of([s.id for s in stored])
    sources = [
        DigestSource(s.item.feed, s.item.title, s.item.url, s.item.summary, s.item.language,
                     s.first_seen, s.matches,
                     stories[s.id].story_id if s.id in stories else None)
        for s in stored
    ]  # fmt: skip
    content = build_digest(
        name=setup.name, language=setup.language, timezone=setup.timezone, period=period,
        sources=sources, labels=setup.topic_labels, gate=setup.gate,
        counts=repo.topic_counts(period.start, period.end),
        previous_counts=repo.topic_counts(period.previous().start, period.start),
        health=setup.health, feeds_total=setup.feeds_total,
    )  # fmt: skip
    text, html = render_digest(content)
    subject = format_subject(
        setup.subject, name=setup.name, period=period, timezone=setup.timezone, count=len(sources)
    )
    return subject, text, html, len(sources)


def run_digest(
    repo: Any,
    setup: DigestSetup,
    period: Period,
    *,
    now: datetime,
    smtp: SmtpSettings | None,
    force: bool = False,
    dry_run: bool = False,
) -> DigestResult:
    """Send one digest period once: recorded in storage, retried later on SMTP trouble
    until GIVE_UP_AFTER past its end."""
    record = repo.digest_record(setup.name, period.start)
    if record is not None and record.status == "sent" and not force and not dry_run:
        when = record.sent_at.strftime("%Y-%m-%d %H:%M UTC") if record.sent_at else "earlier"
        return DigestResult(
            "already-sent",
            f"digest '{setup.name}' for {_describe(period, setup.timezone)} was sent on {when};"
            " nothing sent (use --force to send it again)",
            period,
        )
    if dry_run:
        subject, text, html, count = render_period(repo, setup, period)
        owed = record.pending if record is not None and record.status != "sent" else ()
        to = _recipients(setup, owed) or _recipients(setup, ())
        return DigestResult(
            "dry-run",
            f"dry run: digest '{setup.name}' for {_describe(period, setup.timezone)}: {count} items"
            f" to {', '.join(to)}; nothing sent or recorded",
            period, subject, text, html,
        )  # fmt: skip
    if smtp is None:
        smtp = SmtpSettings.from_env()  # raises DeliveryError naming what is missing
    # claimed before it is rendered: a period another worker is sending costs no rendering
    # (a rendering that raises leaves it 'sending', taken again an hour later). A forced
    # send is rendered first: interrupted, it leaves the period as it was (sent, say)
    rendered = render_period(repo, setup, period) if force else None
    claimed = repo.claim_digest(setup.name, period.start, period.end, now, force=force)
    if claimed is None:
        return DigestResult("busy", _not_taken(repo, setup, period), period)
    # recipients an earlier try did not reach (a digest sent keeps none: it goes to all)
    owed = list(claimed.pending) or list(setup.to)
    if record is not None and not force and now >= period.end + GIVE_UP_AFTER:
        return _give_up(repo, setup, period, claimed, owed, now)
    # those still owed it, as far as feeds.yaml still lists them (an address's case aside)
    recipients = _recipients(setup, owed)
    if not recipients and force:  # --force, once feeds.yaml lists others: to them
        recipients = _recipients(setup, ())
    if not recipients:
        error = (f"no one to send it to: digests.{setup.name}.to in feeds.yaml no longer "
                 f"lists {', '.join(owed)}, still owed it")  # fmt: skip
        return _failed(repo, setup, period, claimed.attempts + 1, error, owed, True, now,
                       claimed.items, claimed.sent_at)  # fmt: skip
    subject, text, html, count = rendered or render_period(repo, setup, period)
    msg = build_message(
        sender=smtp.sender, recipients=recipients, subject=subject, text=text, html=html, now=now
    )
    try:
        outcome = send_email(smtp, msg, recipients)
    except DeliveryError as exc:
        return _failed(repo, setup, period, claimed.attempts + 1, str(exc), recipients,
                       exc.permanent, now, count, claimed.sent_at)  # fmt: skip
    problems = "; ".join(f"{r}: {a}" for r, a in {**outcome.permanent, **outcome.temporary}.items())
    if outcome.permanent and (outcome.accepted or outcome.temporary):
        # said now, as an error: a retry goes to the others only, and its success forgets these
        refused = "; ".join(f"{r}: {a}" for r, a in outcome.permanent.items())
        log.error("digest=%s period=%s refused for good: %s", setup.name, period.start.date(),
                  refused)  # fmt: skip
    if outcome.temporary:
        return _failed(repo, setup, period, claimed.attempts + 1, problems,
                       list(outcome.temporary), False, now, count, claimed.sent_at)  # fmt: skip
    if not outcome.accepted:
        return _failed(repo, setup, period, claimed.attempts + 1, f"refused for good: {problems}",
                       (), True, now, count, claimed.sent_at)  # fmt: skip
    status = "sent"
    message = f"sent digest '{setup.name}' for {_describe(period, setup.timezone)} ({count} items)"
    message += f" to {', '.join(outcome.accepted)}"
    if outcome.permanent:
        message += f"; refused for good: {problems}"
        status = "partial"
    repo.finish_digest(
        setup.name, period.start, status="sent", now=now, items=count, error=problems or None,
    )  # fmt: skip
    log.info("digest=%s period=%s status=%s items=%d to=%s", setup.name, period.start.date(),
             status, count, ",".join(outcome.accepted))  # fmt: skip
    return DigestResult(status, message, period, subject, text, html)


def _give_up(
    repo: Any, setup: DigestSetup, period: Period, claimed: Any, owed: Sequence[str],
    now: datetime,
) -> DigestResult:  # fmt: skip
    """A period still owed GIVE_UP_AFTER past its end: said, and never tried again."""
    why = claimed.last_error or "its last try was cut off"
    if claimed.sent_at is None:
        error = (f"given up {GIVE_UP_AFTER.days} days after the period ended, never sent to "
                 f"{', '.join(owed)}; last error: {why}")  # fmt: skip
        return _failed(repo, setup, period, claimed.attempts + 1, error, owed, True, now,
                       claimed.items)  # fmt: skip
    # a forced resend of a digest sent before: it stays sent, the resend is given up
    error = f"a resend to {', '.join(owed)} was given up; last error: {why}"
    return _resend_failed(repo, setup, period, error, now, claimed.items, claimed.sent_at)


def _resend_failed(
    repo: Any, setup: DigestSetup, period: Period, error: str, now: datetime, count: int,
    sent_at: datetime,
) -> DigestResult:  # fmt: skip
    """A forced resend that failed for good or was given up: the digest stays sent."""
    repo.finish_digest(setup.name, period.start, status="sent", now=now, items=count,
                       error=error, sent_at=sent_at)  # fmt: skip
    log.error("digest=%s period=%s %s", setup.name, period.start.date(), error)
    return DigestResult(
        "failed",
        f"digest '{setup.name}' for {_describe(period, setup.timezone)} (sent on "
        f"{sent_at:%Y-%m-%d %H:%M UTC}): {error}",
        period,
    )


def _recipients(setup: DigestSetup, owed: Sequence[str]) -> list[str]:
    """Those of `owed` (everyone, when empty) feeds.yaml still lists, as it spells them,
    each once (an address's case aside)."""
    listed: dict[str, str] = {}
    for r in setup.to:
        listed.setdefault(r.casefold(), r)
    if not owed:
        return list(listed.values())
    return list(dict.fromkeys(listed[r.casefold()] for r in owed if r.casefold() in listed))


def _failed(
    repo: Any, setup: DigestSetup, period: Period, attempts: int, error: str,
    pending: Sequence[str], permanent: bool, now: datetime, count: int,
    sent_at: datetime | None = None,  # a forced resend of a digest sent then
) -> DigestResult:  # fmt: skip
    if permanent and sent_at is not None:  # the resend failed: the digest stays sent
        error = f"a resend to {', '.join(pending) or 'its recipients'} failed: {error}"
        return _resend_failed(repo, setup, period, error, now, count, sent_at)
    if permanent:
        repo.finish_digest(setup.name, period.start, status="failed", now=now, items=count,
                           pending=pending, error=error)  # fmt: skip
        log.error("digest=%s period=%s failed: %s", setup.name, period.start.date(), error)
        return DigestResult(
            "failed",
            f"digest '{setup.name}' for {_describe(period, setup.timezone)} not sent: {error}",
            period,
        )
    retry_at = now + retry_delay(attempts)
    repo.finish_digest(setup.name, period.start, status="retry", now=now, items=count,
                       pending=pending, error=error, next_attempt=retry_at)  # fmt: skip
    log.warning("digest=%s period=%s will retry at %s: %s", setup.name, period.start.date(),
                retry_at.isoformat(timespec="seconds"), error)  # fmt: skip
    when = f"{retry_at:%Y-%m-%d %H:%M UTC}"
    if retry_at >= period.end + GIVE_UP_AFTER:  # the service gives it up then, untried
        after = (f"given up at {when}, {GIVE_UP_AFTER.days} days past the period's end, "
                 f"without a try (--force tries again)")  # fmt: skip
    else:
        after = f"retrying at {when}"
    return DigestResult(
        "retry",
        f"digest '{setup.name}' not sent yet: {error}; {after} to {', '.join(pending)}",
        period,
    )


def _not_taken(repo: Any, setup: DigestSetup, period: Period) -> str:
    """Why a period's claim was refused, in words the person at `digest send` can act on."""
    what = f"digest '{setup.name}' for {_describe(period, setup.timezone)}"
    record = repo.digest_record(setup.name, period.start)
    if record is None:  # gone between the claim and now: nothing to say but try again
        return f"{what} is not due; try again"
    error = f" (last error: {record.last_error})" if record.last_error else ""
    if record.status == "retry" and record.next_attempt:
        return (f"{what} waits for its next try at {record.next_attempt:%Y-%m-%d %H:%M UTC}"
                f"{error}; --force sends it now")  # fmt: skip
    if record.status == "failed":
        return f"{what} was not sent{error}; --force sends it again"
    if record.status == "sent":
        return f"{what} was sent meanwhile; nothing sent (use --force to send it again)"
    return (f"{what} is being sent (by the service, or a send that stopped: taken again an "
            f"hour on); nothing sent, not even with --force")  # fmt: skip


def _describe(period: Period, timezone: str) -> str:
    tz = ZoneInfo(timezone)
    last = (period.end - timedelta(seconds=1)).astimezone(tz)
    return f"{period.start.astimezone(tz):%Y-%m-%d}..{last:%Y-%m-%d}"


def due_periods(
    repo: Any, setups: Sequence[DigestSetup], now: datetime
) -> list[tuple[DigestSetup, Period]]:
    """Digest periods owed: the last complete one if never recorded (and the service was
    running before it ended), and every one, however old, waiting for a retry that is due
    or cut off mid-send (run_digest gives up those older than GIVE_UP_AFTER). Each digest's
    periods oldest first: readers get them in the order of the weeks they cover."""
    first_seen: datetime | None = None  # read once, and only for a period never recorded
    looked = False
    due = []
    for setup in setups:
        periods = [Period(r.period_start, r.period_end) for r in repo.owed_digests(setup.name, now)]
        period = period_before(setup.schedule, setup.timezone, now)
        if repo.digest_record(setup.name, period.start) is None:
            if not looked:
                first_seen, looked = repo.first_item_seen(), True
            if first_seen is not None and first_seen < period.end:
                periods.append(period)
        due += [(setup, p) for p in sorted(periods, key=lambda p: p.start)]
    return due
