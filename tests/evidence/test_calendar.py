"""The HTTP calendar provider and the upgrade fetcher against the fake calendar over loopback.

Every misbehaviour mode of tests/fake_calendar.py becomes the attempt class DESIGN §6 names;
the allow-list refuses before any request leaves (the fake's ``.requests`` stays at zero);
and the three answers of ``/timestamp/…`` (pending, not found, complete) come out as the
strategy needs them (reference opentimestamps.md §2).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

import httpx
import pytest

from stampd.daemon.evidence.allowlist import UrlAllowList
from stampd.daemon.evidence.calendar import HttpCalendar, UpgradeFetcher
from stampd.daemon.evidence.roles import ProviderFailure
from stampd.store.errors import ErrorClass
from stampd.store.formats.ots import Pending, Timestamp, bitcoin_leaves, merge, pending_leaves
from tests.fake_bitcoind import FakeBitcoind
from tests.fake_calendar import FakeCalendar

T = TypeVar("T")
DIGEST = hashlib.sha256(b"a record\n").digest()


@pytest.fixture
def bitcoind() -> Iterator[FakeBitcoind]:
    with FakeBitcoind() as node:
        yield node


@pytest.fixture
def fake(bitcoind: FakeBitcoind) -> Iterator[FakeCalendar]:
    with FakeCalendar(bitcoind, slow_seconds=5.0) as peer:
        yield peer


def run(call: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    async def main() -> T:
        async with httpx.AsyncClient() as client:
            return await call(client)

    return asyncio.run(main())


def submit(fake: FakeCalendar, *, timeout: float = 5.0) -> Timestamp:
    return run(
        lambda client: HttpCalendar(url=fake.url, client=client, timeout=timeout).submit(DIGEST)
    )


def failure(call: Callable[[], object]) -> ProviderFailure:
    with pytest.raises(ProviderFailure) as caught:
        call()
    return caught.value


def fetch(
    fake: FakeCalendar, commitment: bytes, *, allow: tuple[str, ...] = ()
) -> Timestamp | None:
    allowed = UrlAllowList.from_patterns(allow or (fake.url,))

    async def call(client: httpx.AsyncClient) -> Timestamp | None:
        return await UpgradeFetcher(allow=allowed, client=client, timeout=5.0).fetch(
            fake.url, commitment
        )

    return run(call)


def test_submit_returns_the_pending_tree_rooted_at_the_digest(fake: FakeCalendar) -> None:
    tree = submit(fake)
    assert tree.message == DIGEST
    [(uri, commitment)] = pending_leaves(tree)
    assert uri == fake.url and commitment in fake.pending
    # One request, to <base>digest, with the raw 32-byte digest.
    assert fake.requests["digest"] == 1 and fake.digests == [DIGEST]


def test_a_calendar_url_with_a_path_keeps_it(fake: FakeCalendar) -> None:
    """§2: ``urljoin`` would turn ``http://h/cal`` into ``http://h/digest``; ours asks
    ``http://h/cal/digest`` (the fake answers 404 elsewhere: the path was kept)."""
    error = failure(
        lambda: run(
            lambda client: HttpCalendar(url=fake.url + "/cal", client=client, timeout=5.0).submit(
                DIGEST
            )
        )
    )
    assert error.error_class == ErrorClass.HTTP_STATUS and "404" in error.message
    assert fake.requests["other"] == 1 and fake.requests["digest"] == 0


@pytest.mark.parametrize(
    ("mode", "error_class", "status"),
    [
        ("garbage", ErrorClass.PARSE, None),
        ("oversized", ErrorClass.PARSE, 200),
        ("dead", ErrorClass.NETWORK, None),
        ("status_500", ErrorClass.HTTP_STATUS, 500),
    ],
)
def test_submit_failures_have_their_class(
    fake: FakeCalendar, mode: str, error_class: ErrorClass, status: int | None
) -> None:
    fake.mode = mode
    error = failure(lambda: submit(fake))
    assert error.error_class == error_class, error.message
    if status is not None:
        assert error.http_status == status
    if mode == "oversized":
        assert "10000-byte cap" in error.message


def test_submit_slower_than_the_timeout_is_a_timeout(fake: FakeCalendar) -> None:
    fake.mode = "slow"
    error = failure(lambda: submit(fake, timeout=0.3))
    assert error.error_class == ErrorClass.TIMEOUT and "0.3 s" in error.message


def test_a_reply_built_for_another_digest_never_leads_to_our_commitment(
    fake: FakeCalendar,
) -> None:
    """``wrong_commitment``: the tree decodes (from our digest), but its pending commitment is
    not what the calendar recorded, so asking for it is "Not found" (and remembered)."""
    fake.mode = "wrong_commitment"
    tree = submit(fake)
    [(_, commitment)] = pending_leaves(tree)
    assert commitment not in fake.pending
    fake.mode = "ok"

    async def call(client: httpx.AsyncClient) -> tuple[Timestamp | None, UpgradeFetcher]:
        fetcher = UpgradeFetcher(
            allow=UrlAllowList.from_patterns([fake.url]), client=client, timeout=5.0
        )
        return await fetcher.fetch(fake.url, commitment), fetcher

    found, fetcher = run(call)
    assert found is None and fetcher.not_found == {(fake.url, commitment)}


class _Busy(BaseHTTPRequestHandler):
    """A calendar that is overloaded: 503 with ``Retry-After: 120`` for every request."""

    def do_POST(self) -> None:
        self.send_response(503)
        self.send_header("Retry-After", "120")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        """Quiet."""


def test_submit_honours_retry_after_on_503() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Busy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        error = failure(
            lambda: run(
                lambda client: HttpCalendar(url=url, client=client, timeout=5.0).submit(DIGEST)
            )
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert error.error_class == ErrorClass.HTTP_STATUS
    assert error.http_status == 503 and error.retry_after == 120.0


def test_fetch_pending_then_complete(fake: FakeCalendar, bitcoind: FakeBitcoind) -> None:
    tree = submit(fake)
    [(_, commitment)] = pending_leaves(tree)
    assert fetch(fake, commitment) is None  # "Pending confirmation in Bitcoin blockchain"
    fake.broadcast()
    assert fetch(fake, commitment) is None  # "Timestamped by transaction …"
    height = fake.mine()
    assert height is not None
    upgrade = fetch(fake, commitment)
    assert upgrade is not None and upgrade.message == commitment
    merged = merge(tree, commitment, upgrade)
    [(leaf_height, root)] = bitcoin_leaves(merged)
    assert leaf_height == height and root == bitcoind.header(height).merkle_root
    # Merging only adds: the pending leaf is still there (DESIGN rule 6).
    assert any(isinstance(a, Pending) for _, a in merged.leaves())
    assert fake.requests["timestamp"] == 3


def test_fetch_not_found_is_none_and_remembered(fake: FakeCalendar) -> None:
    unknown = bytes(44)
    assert fetch(fake, unknown) is None
    assert fake.requests["timestamp"] == 1


@pytest.mark.parametrize(
    ("mode", "error_class"),
    [
        ("garbage", ErrorClass.PARSE),
        ("oversized", ErrorClass.PARSE),
        ("dead", ErrorClass.NETWORK),
        ("status_500", ErrorClass.HTTP_STATUS),
    ],
)
def test_fetch_failures_have_their_class(
    fake: FakeCalendar, mode: str, error_class: ErrorClass
) -> None:
    tree = submit(fake)
    [(_, commitment)] = pending_leaves(tree)
    fake.mine()
    fake.mode = mode
    error = failure(lambda: fetch(fake, commitment))
    assert error.error_class == error_class, error.message


def test_fetch_refused_by_the_allow_list_sends_nothing(fake: FakeCalendar) -> None:
    tree = submit(fake)
    [(uri, commitment)] = pending_leaves(tree)
    error = failure(
        lambda: fetch(fake, commitment, allow=("https://*.calendar.opentimestamps.org",))
    )
    assert error.error_class == ErrorClass.REJECTED
    assert uri in error.message and "anchor.allow" in error.message
    assert fake.requests["timestamp"] == 0


def test_identity_is_url_and_timeout() -> None:
    async def call(client: httpx.AsyncClient) -> list[object]:
        return [
            HttpCalendar(url=url, client=client, timeout=timeout).identity
            for url, timeout in (("http://127.0.0.1:1/", 5.0), ("http://127.0.0.1:1/", 6.0))
        ]

    first, second = run(call)
    assert first != second
