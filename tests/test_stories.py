"""Stories: one alert per news event, however many outlets and languages carry it."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from alerts.outbox import Pacer, dispatch_all, dispatch_pending
from alerts.routing import Router
from alerts.slack import SlackSettings
from monitor.classify import compile_rules
from monitor.cli import main
from monitor.stories import (
    Signature,
    StoryRules,
    best_story,
    same_story,
    signature,
    title_key,
)
from monitor.types import FeedUpdate, Item, Match, ParsedFeed
from storage import Repository, make_engine
from storage.repo import DELIVERY_LEASE, PollWrite, StoreResult
from tests.servers import SlackServer

NOW = datetime(2026, 9, 18, 14, tzinfo=UTC)
DEAL = (Match("ai_entertainment", ("AI",), 4.0), Match("deals_partnerships", ("deal",), 2.0))

LIONSGATE_EN = (
    "Lionsgate Strikes Deal With Runway to Train Custom AI Model",
    "Lionsgate has signed a partnership with Runway that will see the generative "
    "AI startup build a custom video model trained on the studio's catalog.",
)
LIONSGATE_IT = (
    "Lionsgate firma con Runway: l'intelligenza artificiale entra nel cinema",
    "Lo studio di Hunger Games ha firmato un accordo con Runway per addestrare un "
    "modello video su misura sul proprio catalogo.",
)
LIONSGATE_ES = (
    "Lionsgate y Runway se alían para entrenar un modelo de IA con su catálogo",
    "El estudio Lionsgate cede su catálogo a Runway, la empresa de IA generativa.",
)
AMC = (
    "AMC Networks signs with Runway for AI marketing",
    "AMC Networks will use Runway's video models for marketing materials and "
    "pre-visualisation of its series.",
)
GEMA_EN = (
    "GEMA wins landmark case against OpenAI in Munich",
    "A Munich regional court has ruled that OpenAI infringed copyright with ChatGPT by "
    "reproducing lyrics from nine German songs. GEMA called it a first in Europe.",
)
GEMA_IT = (
    "Germania, la GEMA vince la causa contro OpenAI sui testi delle canzoni",
    "Il tribunale di Monaco di Baviera ha dato ragione alla GEMA: ChatGPT ha violato il "
    "diritto d'autore riproducendo i testi di nove canzoni. OpenAI valuta il ricorso.",
)
GEMA_DE = (
    "Landgericht München: GEMA gewinnt gegen OpenAI",
    "Das Landgericht hat entschieden, dass OpenAI mit ChatGPT Urheberrechte verletzt, weil "
    "das Modell Liedtexte von neun Songs wiedergibt. OpenAI kündigte Berufung an.",
)
STRIKE_EN = (
    "SAG-AFTRA members ratify video game contract, ending strike",
    "Performers approved the Interactive Media Agreement by 95.04%, with consent rules "
    "for AI replicas and raises totaling 15.17%.",
)
STRIKE_IT = (
    "Usa, finisce lo sciopero degli attori dei videogiochi",
    "Gli iscritti al sindacato SAG-AFTRA hanno approvato con il 95,04% il nuovo accordo: "
    "consenso obbligatorio per le repliche digitali e aumenti del 15,17%.",
)
VADER_EN = (
    "SAG-AFTRA takes Epic Games to the NLRB over Fortnite's AI Darth Vader",
    "The union says Llama Productions, an Epic Games subsidiary, replaced actors with an AI "
    "voice of Darth Vader in Fortnite without bargaining.",
)
VADER_FR = (
    "La voix IA de Dark Vador dans Fortnite vaut une plainte à Epic Games",
    "Le syndicat SAG-AFTRA accuse Llama Productions, filiale d'Epic Games, d'avoir remplacé "
    "des comédiens par une voix IA dans Fortnite. Plainte déposée auprès du NLRB.",
)
UMG = (
    "Universal Music Group sues Suno over AI vocals",
    "Universal Music Group has filed suit against Suno in Massachusetts over 1,400 recordings.",
)
SONY_AFTER_UMG = (
    "Sony Music Sues Udio, Alleging AI Training on Its Catalog",
    "Hours after UMG went after Suno, Sony Music Entertainment filed its own suit against "
    "Udio in New York, claiming Udio copied 820 Sony recordings.",
)


def item(text: tuple[str, str], feed: str = "thr", url: str | None = None, lang: str = "en",
         n: int = 0) -> Item:  # fmt: skip
    url = url or f"https://{feed}.example/{abs(hash(text[0])) % 10**6}"
    return Item(feed, f"{feed}-{n}-{url}", None, url, text[0], text[1], NOW, lang)


@pytest.mark.parametrize(
    "a, b, joins",
    [
        (item(LIONSGATE_EN), item(LIONSGATE_IT, "thr-roma", lang="it"), True),  # names
        (item(LIONSGATE_EN), item(LIONSGATE_ES, "elpais-cultura", lang="es"), True),
        (item(LIONSGATE_EN), item(AMC, "deadline"), False),  # Runway alone is not enough
        (
            item(LIONSGATE_EN, url="https://thr.example/a"),
            item(("Another headline", "Another text"), "variety", url="https://thr.example/a"),
            True,
        ),  # the same link
        (
            item(LIONSGATE_EN),
            item((LIONSGATE_EN[0] + " | Variety", "Syndicated."), "variety"),
            True,
        ),  # same title
        (
            item(
                (
                    "Sony Music sues Udio over AI songs",
                    "Sony Music filed suit against Udio in "
                    "New York over training on its recordings.",
                )
            ),
            item(
                (
                    "Universal Music sues Suno over AI songs",
                    "Universal Music filed suit against "
                    "Suno in Boston over training on its recordings.",
                )
            ),
            False,
        ),
        # German capitalises nouns: whom the headline is about is a name, not "Landgericht"
        (item(GEMA_EN), item(GEMA_DE, "heise", lang="de"), True),
        # a kicker ("Germania, …") tags the place; the headline is about GEMA
        (item(GEMA_EN), item(GEMA_IT, "thr-roma", lang="it"), True),
        # a longer form of a name is the same name
        (
            item(("Universal Music sues Suno over AI vocals", "Universal Music sued Suno.")),
            item(UMG, "billboard"),
            True,
        ),
        # one name and the same figures (95.04%, 15.17%), whatever the headline opens with
        (item(STRIKE_EN), item(STRIKE_IT, "ansa-cinema", lang="it"), True),
        # nearly all names shared outweigh a lead spelt otherwise (Dark Vador)
        (item(VADER_EN), item(VADER_FR, "numerama", lang="fr"), True),
        # recalling another event names its names, but the report is about Sony and Udio
        (item(UMG), item(SONY_AFTER_UMG, "variety"), False),
    ],
)
def test_which_reports_are_one_story(a: Item, b: Item, joins: bool) -> None:
    rules = StoryRules()
    verdict = same_story(
        signature(b, DEAL, "ai_entertainment"), signature(a, DEAL, "ai_entertainment"), rules
    )
    assert (verdict is not None) is joins, verdict


def test_a_compared_signature_is_the_same_signature() -> None:
    """Comparing arranges a new item's signature's names once, for its later
    comparisons (a kept one arranges them each time); that changes neither what it
    equals, nor what is stored of it, nor what a worker sends."""
    new = signature(item(LIONSGATE_IT, "thr-roma", lang="it"), DEAL, "ai_entertainment")
    member = signature(item(LIONSGATE_EN), DEAL, "ai_entertainment")
    fresh = Signature.from_json(member.to_json())
    assert same_story(new, member, StoryRules()) == same_story(new, member, StoryRules())
    kept = member.kept()  # as a story keeps it in memory: the same as it reads it back
    assert kept == fresh and hash(kept) == hash(fresh)
    assert member.to_json() == kept.to_json() == fresh.to_json()
    assert same_story(new, kept, StoryRules()) == same_story(new, member, StoryRules())
    assert pickle.loads(pickle.dumps(member)) == member


@pytest.mark.parametrize(
    "stored, kept",
    [
        (["Lionsgate", "Runway"], ("Lionsgate", "Runway")),  # as to_json writes them
        (["Runway", "Lionsgate", "Runway"], ("Lionsgate", "Runway")),  # by hand: sorted, once
        (["Lionsgate", "Lionsgate", "Runway"], ("Lionsgate", "Runway")),  # in order, twice
        (["Runway"], ("Runway",)),
        ([2027], ("2027",)),
        (["Runway", 2027], ("2027", "Runway")),  # not a string
        ("Runway", ()),  # not a list
        (None, ()),
    ],
)
def test_a_stored_signature_reads_back_as_sorted_distinct_strings(stored, kept) -> None:
    sig = Signature.from_json({"title_key": "t", "words": stored, "entities": stored})
    assert sig.words == sig.entities == kept


@pytest.mark.parametrize(
    "text, lang, lead",
    [
        (("Landgericht München: GEMA gewinnt gegen OpenAI", "Das Gericht urteilt."), "de", "gema"),
        (("Streik der Videospiel-Sprecher in den USA beendet", "Der Streik ist vorbei."), "de",
         "usa"),
        (("Anche AMC Networks sceglie Runway", "AMC Networks userà Runway."), "it",
         "amc networks"),
        (("Avec Gen-5, Runway promet une minute de vidéo", "Runway dévoile Gen-5."), "fr", "gen"),
        (("Etichetta obbligatoria: le nuove regole Agcom", "Lo prevedono le linee guida."), "it",
         "agcom"),
        (("Lionsgate Strikes Deal With Runway to Train Custom AI Model", "Lionsgate signed."),
         "en", "lionsgate"),
    ],
)  # fmt: skip
def test_the_lead_is_the_name_the_headline_is_about(text, lang, lead) -> None:
    assert signature(item(text, lang=lang), DEAL, "ai_entertainment").lead == lead


@pytest.mark.parametrize(
    "title, key",
    [
        ("Lionsgate Strikes Deal With Runway | Variety", "lionsgate strikes deal with runway"),
        ("Lionsgate strikes deal with Runway - Deadline", "lionsgate strikes deal with runway"),
        ("L'IA entra nel cinema: è già qui", "l ia entra nel cinema e gia qui"),
    ],
)
def test_title_key_drops_outlet_suffix_case_accents_and_punctuation(title, key) -> None:
    assert title_key(title) == key


# -- stored and alerted ----------------------------------------------------------------------


@pytest.fixture
def repo(database_url: str) -> Repository:
    r = Repository(make_engine(database_url))
    r.create_schema()
    r.configure_stories(StoryRules(), "ai_entertainment")
    return r


def store(repo: Repository, it: Item, when: datetime = NOW) -> None:
    upd = FeedUpdate("ok", 200, None, None, None, None, 0, when, when, when, False, 5)
    router = Router(default_channel="#ai-news", transport="bot")
    parsed = ParsedFeed(it.feed, it.language, (it,), {it.identity: DEAL})
    repo.store_poll(it.feed, f"https://{it.feed}.example/rss", upd, parsed, router, when)


def bot(server: SlackServer) -> SlackSettings:
    return SlackSettings(webhook_url=None, bot_token=server.token, api_url=server.api_url)


def dispatch(repo: Repository, server: SlackServer, now: datetime = NOW):
    return dispatch_pending(repo, bot(server).sender_for, now, pacer=Pacer(interval=0))


def test_later_reports_reply_in_the_thread_and_update_the_coverage(
    repo: Repository, slack_server: SlackServer
) -> None:
    store(repo, item(LIONSGATE_EN))
    assert dispatch(repo, slack_server).sent == 1
    (alert,) = slack_server.calls
    parent_ts = slack_server.posted and next(iter(slack_server.posted))
    store(repo, item(LIONSGATE_IT, "thr-roma", lang="it"), NOW + timedelta(hours=2))
    store(repo, item(LIONSGATE_ES, "elpais-cultura", lang="es"), NOW + timedelta(hours=3))
    assert dispatch(repo, slack_server, NOW + timedelta(hours=3)).sent == 2
    replies = slack_server.calls[1:]
    assert [c.payload.get("thread_ts") for c in replies] == [parent_ts, parent_ts]
    assert replies[0].payload["text"].startswith("Also covered by thr-roma (it)")
    assert all(c.payload.get("thread_ts") for c in slack_server.calls[1:])  # no new top-level
    last = slack_server.updates[-1].payload
    assert last["ts"] == parent_ts and "Also covered by 2 more: thr-roma, elpais-cultura" in (
        json.dumps(last["blocks"], ensure_ascii=False)
    )
    assert alert.payload["channel"] == "#ai-news"


def test_where_slack_cannot_thread_later_reports_are_merged_into_the_alert(
    repo: Repository, slack_server: SlackServer
) -> None:
    """A webhook can neither reply nor update: the story's alert stands for its later
    reports, which are marked merged (together, in one transaction), nothing posted."""
    hook = SlackSettings(webhook_url=slack_server.webhook_url, bot_token=None,
                         api_url=slack_server.api_url)  # fmt: skip
    webhook = Router(default_channel="#ai-news", transport="webhook")
    for n, (story, feed, lang) in enumerate(
        [(LIONSGATE_EN, "variety", "en"), (LIONSGATE_IT, "thr-roma", "it"),
         (LIONSGATE_ES, "elpais-cultura", "es")]
    ):  # fmt: skip
        it = item(story, feed, lang=lang)
        when = NOW + timedelta(hours=n)
        upd = FeedUpdate("ok", 200, None, None, None, None, 0, when, when, when, False, 5)
        parsed = ParsedFeed(it.feed, it.language, (it,), {it.identity: DEAL})
        repo.store_poll(it.feed, f"https://{it.feed}.example/rss", upd, parsed, webhook, when)
    report = dispatch_pending(repo, hook.sender_for, NOW + timedelta(hours=3),
                              pacer=Pacer(interval=0))  # fmt: skip
    assert (report.sent, report.retrying, report.failed) == (3, 0, 0)
    assert len(slack_server.calls) == 1  # the alert; no reply, no update
    assert sorted(d.status for d in repo.deliveries()) == ["merged", "merged", "sent"]


def test_a_later_report_of_a_story_in_a_summary_alerts_and_leaves_the_summary_whole(
    repo: Repository, slack_server: SlackServer
) -> None:
    """Thirteen stories at once go out as one summary (burst 10). A later report of one of
    them used to reply under the summary and rewrite it into that story's alert: the
    other twelve vanished from the channel."""
    store(repo, item(LIONSGATE_EN))
    others = [GEMA_EN, STRIKE_EN, VADER_EN, AMC] + [
        (f"Studio{i} Quarterly{i} hires Director{i} for Film{i}", f"Company{i} news {i}.")
        for i in range(8)
    ]
    for i, headline in enumerate(others):
        store(repo, item(headline, "variety", n=i))
    assert dispatch(repo, slack_server).sent == 13
    (summary,) = slack_server.calls
    assert summary.payload["text"].startswith("13 new stories")
    store(repo, item(LIONSGATE_IT, "thr-roma", lang="it"), NOW + timedelta(hours=2))
    assert dispatch(repo, slack_server, NOW + timedelta(hours=2)).sent == 1
    assert slack_server.updates == []  # the summary is as it was sent
    alert = slack_server.calls[-1].payload
    assert "thread_ts" not in alert and "Lionsgate" in alert["text"]  # an alert of its own


def test_a_dispatch_that_outlasted_its_claim_does_not_send_what_another_worker_took(
    repo: Repository, slack_server: SlackServer, database_url: str
) -> None:
    """Worker A's pass claims six alerts for DELIVERY_LEASE; a slow Slack (a message a
    second per channel, follow-ups two) can keep it sending past that, and worker B's
    pass then claims what A has not sent yet. A used to send those too: six alerts made
    ten messages."""
    texts = [(f"Studio{i} Quarterly{i} hires Director{i} for Film{i}", f"Company{i} news.")
             for i in range(6)]  # fmt: skip
    for i, headline in enumerate(texts):
        store(repo, item(headline, "variety", n=i))
    worker_b = Repository(make_engine(database_url))  # another process's, on one database
    start = datetime.now(UTC)
    asked: list[int] = []
    a_clock = [0.0]  # A's monotonic clock: its pass runs past the lease before its third

    def b_takes_over() -> bool:  # A asks before each alert; before its third, B runs
        asked.append(1)
        if len(asked) == 3:
            a_clock[0] += DELIVERY_LEASE.total_seconds() + 5
            b = dispatch_pending(worker_b, bot(slack_server).sender_for,
                                 start + DELIVERY_LEASE + timedelta(seconds=5))  # fmt: skip
            assert b.sent == 4
        return False

    a = dispatch_pending(repo, bot(slack_server).sender_for, start, pacer=Pacer(interval=0),
                         stopping=b_takes_over, clock=lambda: a_clock[0])  # fmt: skip
    assert a.sent == 2
    posted = [c.payload["text"] for c in slack_server.calls]
    assert len(posted) == 6 == len(set(posted))  # each alert once
    assert {d.status for d in repo.deliveries()} == {"sent"}


def test_a_syndicated_copy_is_counted_never_alerted_and_another_event_alerts(
    repo: Repository, slack_server: SlackServer
) -> None:
    store(repo, item(LIONSGATE_EN, url="https://thr.example/lionsgate"))
    store(repo, item((LIONSGATE_EN[0] + " | Variety", "Copy."), "variety"))  # same title
    store(repo, item(("Lionsgate news", "x"), "indiewire", url="https://thr.example/lionsgate"))
    store(repo, item(AMC, "deadline"))
    assert dispatch(repo, slack_server).sent == 2
    assert [c.payload.get("thread_ts") for c in slack_server.calls] == [None, None]
    (lionsgate, amc) = sorted(repo.list_stories(NOW - timedelta(days=1)), key=lambda s: s.id)
    assert len(lionsgate.items) == 3 and set(lionsgate.outlets) == {"thr", "variety", "indiewire"}
    assert len(amc.items) == 1


def test_reports_stored_in_one_batch_join_the_story_the_first_of_them_started(
    repo: Repository, slack_server: SlackServer
) -> None:
    # The service stores the polls that finished meanwhile together, and looks their
    # stories up once per batch: a story made by one feed of the batch must be found by
    # the next feed's report of it, and a poll that fails must not sink the others.
    upd = FeedUpdate("ok", 200, None, None, None, None, 0, NOW, NOW, NOW, False, 5)
    router = Router(default_channel="#ai-news", transport="bot")

    def write(it: Item, feed: str | None = None) -> PollWrite:
        parsed = ParsedFeed(it.feed, it.language, (it,), {it.identity: DEAL})
        return PollWrite(feed or it.feed, f"https://{it.feed}.example/rss", upd, parsed, router,
                         NOW)  # fmt: skip

    broken = item(AMC, "deadline")
    broken = Item(broken.feed, broken.identity, None, broken.url, None, broken.summary,  # type: ignore[arg-type]
                  NOW, "en")  # fmt: skip
    results = repo.store_polls([
        write(item(LIONSGATE_EN, url="https://thr.example/lionsgate")),
        write(item(LIONSGATE_IT, "thr-roma", lang="it")),
        write(broken),  # a title the items table refuses: this poll alone fails
        write(item((LIONSGATE_EN[0] + " | Variety", "Copy."), "variety")),  # an exact copy
    ])  # fmt: skip
    assert [r.new_deliveries if isinstance(r, StoreResult) else "error" for r in results] == [
        1, 1, "error", 0
    ]  # fmt: skip
    (story,) = repo.list_stories(NOW - timedelta(days=1))
    assert len(story.items) == 3 and story.outlets == ("thr", "thr-roma", "variety")
    assert dispatch(repo, slack_server).sent == 2
    assert [c.payload.get("thread_ts") is None for c in slack_server.calls] == [True, False]


def test_an_item_stored_with_a_later_poll_does_not_join_a_story_closed_by_then(
    repo: Repository,
) -> None:
    # A batch reads open stories back from its earliest poll; each item still sees only
    # the stories open at its own poll's time.
    store(repo, item(LIONSGATE_EN))
    upd = FeedUpdate("ok", 200, None, None, None, None, 0, NOW, NOW, NOW, False, 5)
    earlier, later = NOW + timedelta(hours=72, seconds=-30), NOW + timedelta(hours=72, seconds=20)
    amc, it = item(AMC, "deadline"), item(LIONSGATE_IT, "thr-roma", lang="it")
    repo.store_polls([
        PollWrite("deadline", "u", upd, ParsedFeed("deadline", "en", (amc,), {amc.identity: DEAL}),
                  None, earlier),
        PollWrite("thr-roma", "u", upd, ParsedFeed("thr-roma", "it", (it,), {it.identity: DEAL}),
                  None, later),
    ])  # fmt: skip
    stories = repo.list_stories(NOW - timedelta(days=1))
    assert sorted(len(s.items) for s in stories) == [1, 1, 1]  # Lionsgate's closed: a new one


def test_an_identical_text_found_first_ranks_level_with_an_exact_copy() -> None:
    # Same words as the new report under another headline, then its exact headline in
    # another story: both rank highest, and the first found keeps its place.
    new = signature(item(LIONSGATE_EN), DEAL, "ai_entertainment")
    same_words = signature(
        item(("Lionsgate strikes a deal with Runway to train custom AI model", LIONSGATE_EN[1]),
             "variety"), DEAL, "ai_entertainment",
    )  # fmt: skip
    assert new.words == same_words.words and new.title_key != same_words.title_key
    exact = signature(item(LIONSGATE_EN, "deadline"), DEAL, "ai_entertainment")
    assert best_story(new, [(1, same_words), (2, exact)], StoryRules())[:2] == (
        1, "near-duplicate text (1.00)"
    )  # fmt: skip
    assert best_story(new, [(2, exact), (1, same_words)], StoryRules()) == (2, "same title", True)


def test_a_later_report_read_before_its_storys_alert_replies_in_the_same_poll(
    repo: Repository, slack_server: SlackServer
) -> None:
    # Due deliveries come in (next attempt, id) order: a later report of a story can be
    # read in a batch before the one holding the story's alert. It waits, then replies.
    router = Router(default_channel="#ai-news", transport="bot")
    upd = FeedUpdate("ok", 200, None, None, None, None, 0, NOW, NOW, NOW, False, 5)
    lead, later = item(LIONSGATE_EN), item(LIONSGATE_IT, "thr-roma", lang="it")
    repo.store_polls([
        PollWrite("thr", "u", upd, ParsedFeed("thr", "en", (lead,), {lead.identity: DEAL}),
                  router, NOW + timedelta(seconds=5)),
        PollWrite("thr-roma", "u", upd,
                  ParsedFeed("thr-roma", "it", (later,), {later.identity: DEAL}), router, NOW),
    ])  # fmt: skip
    at = NOW + timedelta(seconds=5)
    report = dispatch_all(repo, bot(slack_server).sender_for, at, batch=1, pacer=Pacer(0))
    assert (report.sent, report.retrying, report.waiting) == (2, 0, 0)
    alert, reply = slack_server.calls
    assert "thread_ts" not in alert.payload and reply.payload["thread_ts"]
    assert reply.payload["text"].startswith("Also covered by thr-roma (it)")


def test_a_story_closes_after_its_window(repo: Repository, slack_server: SlackServer) -> None:
    store(repo, item(LIONSGATE_EN))
    store(repo, item(LIONSGATE_IT, "thr-roma", lang="it"), NOW + timedelta(hours=73))
    assert len(repo.list_stories(NOW - timedelta(days=1))) == 2


def test_stories_command_lists_items_outlets_and_languages(
    repo: Repository, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store(repo, item(LIONSGATE_EN), datetime.now(UTC))
    store(repo, item(LIONSGATE_IT, "thr-roma", lang="it"), datetime.now(UTC))
    config = tmp_path / "feeds.yaml"
    config.write_text("feeds: []\n")
    assert main(["stories", "--config", str(config), "--format", "json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    story = json.loads(line)
    assert story["outlets"] == ["thr", "thr-roma"] and story["languages"] == ["en", "it"]
    assert len(story["items"]) == 2 and story["topics"] == ["ai_entertainment",
                                                             "deals_partnerships"]  # fmt: skip
    assert {"id", "title", "first_seen"} <= set(story)


def test_workers_growing_one_story_each_see_the_others_reports(database_url: str) -> None:
    # Two workers (two repositories) keep the stories they read in memory; a report the
    # other stored must not be lost when one adds the next.
    first, second = (Repository(make_engine(database_url)) for _ in range(2))
    first.create_schema()
    for r in (first, second):
        r.configure_stories(StoryRules(), "ai_entertainment")
    store(first, item(LIONSGATE_EN))
    store(second, item(LIONSGATE_IT, "thr-roma", lang="it"), NOW + timedelta(hours=1))
    store(first, item(LIONSGATE_ES, "elpais-cultura", lang="es"), NOW + timedelta(hours=2))
    (story,) = first.list_stories(NOW - timedelta(days=1))
    assert len(story.items) == 3
    assert sorted(story.outlets) == ["elpais-cultura", "thr", "thr-roma"]
    assert sorted(story.languages) == ["en", "es", "it"]


def test_a_story_keeps_every_member_signature_across_restarts(database_url: str) -> None:
    """Members join in memory and are written with the story; a restarted service (an
    empty cache) reads them back and places the next report by them."""

    def fresh() -> Repository:
        r = Repository(make_engine(database_url))
        r.create_schema()
        r.configure_stories(StoryRules(), "ai_entertainment")
        return r

    first = fresh()
    store(first, item(LIONSGATE_EN))
    store(first, item((LIONSGATE_EN[0] + " | Variety", "Copy."), "variety"))  # exact copy
    store(first, item(LIONSGATE_IT, "thr-roma", lang="it"), NOW + timedelta(hours=1))
    with first.engine.connect() as conn:
        (stored,) = conn.execute(text("select signatures from stories")).scalars()
    if isinstance(stored, str):
        stored = json.loads(stored)
    # the lead and the Italian report; the copy is counted, not compared with
    assert [Signature.from_json(s).title_key for s in stored] == [
        title_key(LIONSGATE_EN[0]),
        title_key(LIONSGATE_IT[0]),
    ]
    later = fresh()  # as after a restart: nothing cached
    store(later, item(LIONSGATE_ES, "elpais-cultura", lang="es"), NOW + timedelta(hours=2))
    (story,) = later.list_stories(NOW - timedelta(days=1))
    assert set(story.outlets) == {"thr", "variety", "thr-roma", "elpais-cultura"}


def _every_verdict(new: Signature, candidates, rules: StoryRules):
    """best_story as its contract reads: every candidate's verdict, in order; an exact copy
    wins unless an identical text came before it; else the closest text, first of equals."""
    from monitor.stories import _jaccard

    best = None
    for story_id, sig in candidates:
        verdict = same_story(new, sig, rules)
        if verdict is None:
            continue
        reason, exact = verdict
        if exact:
            return (story_id, reason, exact) if best is None or best[0] < 2.0 else best[1:]
        rank = 1.0 + _jaccard(new.words, sig.words)
        if best is None or rank > best[0]:
            best = (rank, story_id, reason, exact)
    return None if best is None else best[1:]


def test_best_story_picks_what_reading_every_candidate_would() -> None:
    # best_story reads the closest texts first and stops at the first it accepts: the
    # labelled reports (cross-language, syndicated, look-alike events), each against
    # the others in two orders, with an exact copy of it among them or not
    from monitor.config import load_config

    config = load_config(Path(__file__).resolve().parent.parent / "feeds.yaml")
    classifier, rules, gate = compile_rules(config.rules()), config.stories.rules(), config.gate()
    data = Path(__file__).parent / "data" / "stories" / "items.jsonl"
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line]
    sigs = []
    for row in rows:
        it = Item(row["feed"], row["id"], None, row["url"], row["title"], row["summary"], NOW,
                  row["lang"])  # fmt: skip
        sigs.append(signature(it, classifier.classify(it) or DEAL, gate))
    found = set()
    for n, new in enumerate(sigs):
        others = [(i, s) for i, s in enumerate(sigs) if i != n][n % 5 :: 3]
        copy = replace(new, url=None, words=new.words | {"syndicated"})  # same title only
        retitled = replace(new, url=None, title_key=f"{new.title_key} again")  # same words
        cut = replace(retitled, words=frozenset(sorted(new.words)[1:]))  # all words but one
        for candidates in (
            others,
            others[::-1],
            [*others[:20], (999, copy), *others[20:]],
            [*others[:10], (997, cut), (998, retitled), (999, copy), *others[10:]],
            [*others[:10], (997, cut), (999, copy), (998, retitled), *others[10:]],
        ):
            expected = _every_verdict(new, candidates, rules)
            assert best_story(new, iter(candidates), rules) == expected, rows[n]["id"]
            found.add(None if expected is None else expected[2])
    assert found == {None, False, True}  # new stories, near reports and exact copies


@pytest.mark.parametrize(
    "text, opener",
    [
        ("Runway signs a deal", True),  # the text's first word
        ("It rained. Runway signs", True),  # after a sentence's end
        ("Yesterday, Runway signed", False),  # mid-sentence
        ("He said: « Runway » signed", True),  # a quote after a colon opens a sentence
        ("he said « Runway »", False),  # a quote mid-sentence does not
        ("Done. " + "«" * 40 + " Runway", True),  # quotes past the first window looked at
        ("done " + "«" * 40 + " Runway", False),
    ],
)
def test_a_single_plain_word_opens_a_sentence_only_after_an_end_or_nothing(
    text: str, opener: bool
) -> None:
    from monitor.stories import _find_names

    (found,) = [n for n in _find_names(text, set()) if n.name == "runway"]
    assert found.opener is opener
