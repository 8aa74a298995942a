"""No request to private networks unless allowed: checked on the resolved address of
the first request and of every redirect, and connected to that same address."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.config import parse_config
from monitor.errors import FetchError
from monitor.fetch import Fetcher
from monitor.network import AddressPolicy, address_kind, is_public_address
from monitor.types import Fetched
from storage import Repository, make_engine
from tests.conftest import fixture, write_config
from tests.servers import FeedServer, FeedServerAt

THR = "thr_rescraped_rss2.xml"  # 9 items
HINT = (
    "(set REELWATCH_ALLOW_PRIVATE_NETWORKS=1 or defaults.allow_private_networks: true "
    "for intranet feeds)"
)


@pytest.fixture(autouse=True)
def _private_networks_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # conftest allows them for every other test: their servers are on 127.0.0.1
    monkeypatch.delenv("REELWATCH_ALLOW_PRIVATE_NETWORKS")


@pytest.fixture
def second_host() -> Iterator[FeedServer]:
    server = FeedServerAt("127.0.0.2")
    yield server
    server.close()


@pytest.mark.parametrize(
    "address, kind",
    [
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("2001:4860:4860::8888", None),
        ("::ffff:8.8.8.8", None),  # IPv4-mapped: judged as the IPv4 address it reaches
        ("64:ff9b::808:808", None),  # NAT64 of 8.8.8.8, as DNS64 answers on IPv6-only hosts
        ("127.0.0.1", "loopback"),
        ("127.0.0.2", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.5", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("::ffff:10.0.0.1", "private"),  # IPv4-mapped
        ("::ffff:127.0.0.1", "loopback"),
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("2002:a00:1::", "private"),  # 6to4 of 10.0.0.1
        ("169.254.10.10", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%1", "link-local"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("100.127.255.254", "shared (CGNAT)"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "reserved"),  # documentation
        ("198.18.0.1", "reserved"),  # benchmarking
        ("::a00:1", "reserved"),  # deprecated IPv4-compatible
    ],
)
def test_address_kind(address: str, kind: str | None) -> None:
    assert address_kind(ipaddress.ip_address(address)) == kind
    assert is_public_address(address) is (kind is None)


def test_refusal_names_the_address_and_the_way_to_allow_it() -> None:
    refusal = AddressPolicy().refusal(ipaddress.ip_address("10.0.0.5"))
    assert refusal == f"refused: 10.0.0.5 is a private address {HINT}"


@pytest.mark.parametrize(
    "policy, address, allowed",
    [
        (AddressPolicy(), "8.8.8.8", True),
        (AddressPolicy(), "10.0.0.5", False),
        (AddressPolicy(allow_private=True), "10.0.0.5", True),
        (AddressPolicy(allow_private=True), "::1", True),
        # instance credentials: no intranet feed lives there
        (AddressPolicy(allow_private=True), "169.254.169.254", False),
        (AddressPolicy(allow_private=True), "fd00:ec2::254", False),
        (
            AddressPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),)),
            "127.0.0.1",
            True,
        ),
        (
            AddressPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),)),
            "127.0.0.2",
            False,
        ),
        (AddressPolicy(allowed_networks=(ipaddress.ip_network("10.1.0.0/16"),)), "10.1.2.3", True),
        (AddressPolicy(allowed_networks=(ipaddress.ip_network("10.1.0.0/16"),)), "10.2.0.1", False),
    ],
)
def test_policy(policy: AddressPolicy, address: str, allowed: bool) -> None:
    assert (policy.refusal(ipaddress.ip_address(address)) is None) is allowed


def fetch(url: str, **fetcher_kw: object) -> Fetched:
    async def go() -> Fetched:
        fetcher = Fetcher(user_agent="reelwatch-test", **fetcher_kw)  # type: ignore[arg-type]
        try:
            return await fetcher.fetch(url, timeout=5)
        finally:
            await fetcher.aclose()

    return asyncio.run(go())


def test_loopback_feed_is_refused_before_any_request(feed_server: FeedServer) -> None:
    url = feed_server.add("/thr.xml", fixture(THR))
    with pytest.raises(FetchError, match=r"^refused: 127\.0\.0\.1 is a loopback address"):
        fetch(url)
    assert feed_server.requests == []


def test_fetcher_allows_private_networks_when_told(feed_server: FeedServer) -> None:
    url = feed_server.add("/thr.xml", fixture(THR))
    assert fetch(url, allow_private_networks=True).body == fixture(THR)


def test_redirect_to_a_refused_address_is_refused(
    feed_server: FeedServer, second_host: FeedServer
) -> None:
    """127.0.0.1 stands for a public host (allowed), 127.0.0.2 for the intranet."""
    allowed = ["127.0.0.1/32"]
    second_host.add("/admin", b"secret")
    url = feed_server.add("/feed", status=302, headers={"Location": second_host.url("/admin")},
                          conditional=False)  # fmt: skip
    feed_server.add("/ok", fixture(THR))
    assert fetch(feed_server.url("/ok"), allowed_networks=allowed).body == fixture(THR)
    with pytest.raises(FetchError, match=r"^refused: 127\.0\.0\.2 is a loopback address"):
        fetch(url, allowed_networks=allowed)
    assert [r.path for r in feed_server.requests] == ["/ok", "/feed"]  # the redirect was asked
    assert second_host.requests == []  # its target never was
    # the same redirect, allowed: the second host answers
    assert fetch(url, allowed_networks=[*allowed, "127.0.0.2/32"]).body == b"secret"


def repo() -> Repository:
    return Repository(make_engine())


def test_poll_refuses_localhost_and_127_0_0_1_until_allowed(
    feed_server: FeedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = feed_server.add("/thr.xml", fixture(THR))
    feeds = {"by-ip": url, "by-name": url.replace("127.0.0.1", "localhost")}
    config = write_config(tmp_path, feeds)
    assert main(["poll", "--config", str(config)]) == 1  # every feed failed
    states = repo().feed_states()
    for name in feeds:
        assert states[name].last_status == "failed"
        assert states[name].last_error == f"refused: 127.0.0.1 is a loopback address {HINT}"
    assert feed_server.requests == [] and repo().count_items() == 0

    monkeypatch.setenv("REELWATCH_ALLOW_PRIVATE_NETWORKS", "1")
    assert main(["poll", "--config", str(config)]) == 0
    assert repo().count_items("by-ip") == 9 and repo().count_items("by-name") == 9


def test_config_can_allow_private_networks() -> None:
    config = parse_config("defaults:\n  allow_private_networks: true\nfeeds: []\n")
    assert config.defaults.allow_private_networks is True
    assert parse_config("feeds: []\n").defaults.allow_private_networks is False


def test_feeds_yaml_allow_private_networks_lets_an_intranet_feed_be_polled(
    feed_server: FeedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REELWATCH_ALLOW_PRIVATE_NETWORKS", raising=False)
    url = feed_server.add("/thr.xml", fixture(THR))
    config = write_config(tmp_path, {"intranet": url}, allow_private_networks="true")
    assert main(["poll", "--config", str(config)]) == 0
    assert repo().count_items("intranet") == 9
