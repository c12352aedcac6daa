"""OpenTimestamps calendars over HTTP: submitting digests, and fetching upgrades of pending leaves.

reference/opentimestamps.md §2. Two parties, two classes:

- :class:`HttpCalendar` is one configured calendar (``anchor.calendars``), a
  :class:`~stampd.daemon.evidence.roles.Calendar` the quorum pool asks:
  ``POST <base>digest`` with the raw digest; the reply must be ``200
  application/octet-stream``, a bare tree rooted at that digest, read to at most
  :data:`~stampd.store.formats.ots.MAX_REPLY` bytes (the reference client's limit) and
  decoded with every limit of a file.
- :class:`UpgradeFetcher` asks the calendar a *proof* names in a Pending leaf:
  ``GET <uri>/timestamp/<hex commitment>``. That URI comes from a file, so it is asked only
  when the allow-list (``anchor.allow`` and the configured calendars) accepts it, and what is
  fetched is the URL the allow-list checked, never the raw text (no SSRF, §2 "Whitelist").
  ``404`` "Pending confirmation…" / "Timestamped by transaction…" means not yet; ``404`` "Not
  found" too, but it is remembered and logged once (a calendar that lost a commitment, or
  just-submitted, server#10).

Replies are untrusted: size-capped while reading (never read unbounded), decoded by the codec,
and a reply is only ever merged at the commitment it was asked for (the strategy's business).
Every failure is a :class:`ProviderFailure` with a stable ``error_class``: ``network``,
``timeout``, ``http_status`` (``Retry-After`` honoured on 429/503, as for TSAs),
``rate_limited``, ``parse``, ``rejected`` (refused by the allow-list: no request is made).
"""

from __future__ import annotations

import asyncio
import time

import httpx

from stampd.daemon.evidence.allowlist import UnsafeUrl, UrlAllowList
from stampd.daemon.evidence.roles import ProviderFailure
from stampd.daemon.evidence.tsa import retry_after_seconds
from stampd.daemon.service.logs import get_logger
from stampd.store.errors import ErrorClass
from stampd.store.formats.ots import MAX_REPLY, OtsDecodeError, Timestamp, decode_reply

log = get_logger("stampd.calendar")

#: What the reference client asks for (§2); otsd answers every endpoint the same either way.
ACCEPT = "application/vnd.opentimestamps.v1"
REPLY_TYPE = "application/octet-stream"
#: The 404 bodies of a commitment the calendar knows but has not confirmed yet (§2 table).
PENDING_BODIES = (b"Pending confirmation", b"Timestamped by transaction")
#: The most of a 404 body read: the client shows at most 160 bytes of it (§2).
MAX_NOTE = 160


class HttpCalendar:
    """One configured calendar (aggregator) that takes digests: a pooled ``Calendar``."""

    def __init__(
        self, *, url: str, client: httpx.AsyncClient, timeout: float, min_interval: float = 0.0
    ) -> None:
        #: The configured URL, normalised as a base ending in ``/`` (config/anchor.py).
        self.name = url
        self.url = url if url.endswith("/") else url + "/"
        self.min_interval = min_interval
        self._client = client
        self._timeout = timeout

    @property
    def identity(self) -> tuple[str, float]:
        """URL and timeout: a reload that changes either gives the calendar a fresh breaker."""
        return (self.url, self._timeout)

    async def submit(self, digest: bytes) -> Timestamp:
        """The calendar's (pending) tree rooted at ``digest``, or :class:`ProviderFailure`."""
        # §2: "http://h/cal" + urljoin would drop "cal"; the base keeps it ("…/cal/digest").
        body = await _exchange(
            self._client, "POST", self.url + "digest", self._timeout, content=digest
        )
        if not isinstance(body, bytes):  # a 404
            raise ProviderFailure(
                ErrorClass.HTTP_STATUS, "HTTP 404 on /digest: is this an OpenTimestamps calendar?"
            )
        try:
            return decode_reply(body, digest)
        except OtsDecodeError as error:
            raise ProviderFailure(
                ErrorClass.PARSE, f"the reply is not a timestamp tree: {error.message}"
            ) from error


#: Upgrade requests in flight at once to one calendar. The pending URIs are outside the pool
#: (no per-provider lock), and a thousand proofs made due at once (`stampd upgrade`, a restart
#: after days offline) must not open a thousand connections to a volunteer-run calendar: the
#: system test with 500 files saw connect timeouts at the calendar, then hours of back-off.
MAX_FETCHES_PER_CALENDAR = 4


class UpgradeFetcher:
    """Asks the calendars named by pending leaves for the rest of their path (§2 "Upgrade")."""

    def __init__(self, *, allow: UrlAllowList, client: httpx.AsyncClient, timeout: float) -> None:
        self.allow = allow
        self._client = client
        self._timeout = timeout
        #: (uri, commitment) pairs a calendar answered "Not found" for; logged once each.
        self.not_found: set[tuple[str, bytes]] = set()
        self._gates: dict[str, asyncio.Semaphore] = {}

    def refusal(self, uri: str) -> str | None:
        """Why the pending URI ``uri`` may not be asked, or None when it may."""
        return self.allow.refusal(uri)

    async def fetch(self, uri: str, commitment: bytes) -> Timestamp | None:
        """The tree from ``commitment`` to its block (rooted at ``commitment``), or None while
        the calendar at ``uri`` has no confirmation yet; :class:`ProviderFailure` otherwise.

        A URI the allow-list refuses is a ``rejected`` failure and no request is sent.
        """
        try:
            clean = self.allow.resolve(uri)
        except UnsafeUrl as error:
            raise ProviderFailure(
                ErrorClass.REJECTED,
                f"pending calendar {uri!r} was not asked: {error}; add a pattern for it to"
                " anchor.allow if that calendar is to be trusted",
            ) from None
        url = f"{clean.base}timestamp/{commitment.hex()}"
        gate = self._gates.setdefault(clean.base, asyncio.Semaphore(MAX_FETCHES_PER_CALENDAR))
        async with gate:  # the wait is not part of the request's timeout
            body = await _exchange(self._client, "GET", url, self._timeout, on_404=True)
        if isinstance(body, _NotYet):
            if not body.known and (uri, commitment) not in self.not_found:
                self.not_found.add((uri, commitment))
                # §4: "Not found" minutes after the POST is that calendar's failure; other
                # forks may still complete, and it is asked again at the upgrade cadence.
                log.warning(
                    "ots_commitment_not_found",
                    calendar=uri,
                    commitment=commitment.hex(),
                    note=body.note,
                )
            return None
        if body is None:  # not reached: with on_404 a 404 is _NotYet
            raise ProviderFailure(ErrorClass.HTTP_STATUS, "HTTP 404")
        try:
            return decode_reply(body, commitment)
        except OtsDecodeError as error:
            raise ProviderFailure(
                ErrorClass.PARSE, f"the upgrade is not a timestamp tree: {error.message}"
            ) from error


class _NotYet:
    """A 404 of ``/timestamp/…``: pending (``known``) or "Not found"."""

    def __init__(self, note: str, known: bool) -> None:
        self.note = note
        self.known = known


async def _exchange(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    timeout: float,
    *,
    content: bytes | None = None,
    on_404: bool = False,
) -> bytes | _NotYet | None:
    """One request: the 200 body (size-capped), a :class:`_NotYet` for a 404 when
    ``on_404``, else None for a 404; :class:`ProviderFailure` for everything else."""
    headers = {"Accept": ACCEPT}
    if content is not None:
        headers["Content-Type"] = REPLY_TYPE
    deadline = time.monotonic() + timeout
    try:
        async with client.stream(
            method, url, content=content, headers=headers, timeout=timeout
        ) as response:
            status = response.status_code
            if status == 404:
                note = await _read_capped(response, MAX_NOTE, deadline, truncate=True)
                if not on_404:
                    return None
                return _NotYet(_shown(note), note.startswith(PENDING_BODIES))
            _check_status(response)
            return await _read_capped(response, MAX_REPLY, deadline)
    except httpx.TimeoutException as error:
        raise ProviderFailure(
            ErrorClass.TIMEOUT, f"no answer within {timeout:g} s ({type(error).__name__})"
        ) from error
    except httpx.TransportError as error:
        raise ProviderFailure(ErrorClass.NETWORK, f"{type(error).__name__}: {error}") from error


def _check_status(response: httpx.Response) -> None:
    status = response.status_code
    retry_after = retry_after_seconds(response.headers.get("retry-after"))
    if status == 429:
        raise ProviderFailure(
            ErrorClass.RATE_LIMITED,
            "HTTP 429 Too Many Requests",
            http_status=status,
            retry_after=retry_after,
        )
    if status != 200:
        raise ProviderFailure(
            ErrorClass.HTTP_STATUS,
            f"HTTP {status} {response.reason_phrase}".strip(),
            http_status=status,
            retry_after=retry_after if status == 503 else None,
        )
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != REPLY_TYPE:
        raise ProviderFailure(
            ErrorClass.PARSE,
            f"the reply's Content-Type is {kind or 'missing'!r}, not {REPLY_TYPE}",
            http_status=status,
        )


async def _read_capped(
    response: httpx.Response, cap: int, deadline: float, *, truncate: bool = False
) -> bytes:
    """At most ``cap`` bytes of the body: more is a ``parse`` failure (or, with ``truncate``,
    cut off); a body still trickling in at ``deadline`` is a timeout."""
    declared = response.headers.get("content-length")
    if not truncate and declared is not None and declared.isdigit() and int(declared) > cap:
        raise ProviderFailure(
            ErrorClass.PARSE,
            f"the reply is {declared} bytes, over the {cap}-byte cap",
            http_status=response.status_code,
        )
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > cap:
            if truncate:
                return bytes(body[:cap])
            raise ProviderFailure(
                ErrorClass.PARSE,
                f"the reply exceeds the {cap}-byte cap",
                http_status=response.status_code,
            )
        if time.monotonic() > deadline:  # a trickling server must not hold a round forever
            raise httpx.ReadTimeout("the reply did not finish in time")
    return bytes(body)


def _shown(note: bytes) -> str:
    """A calendar's 404 text as the reference client shows it: characters outside
    ``[A-Za-z0-9#-.,; ]`` replaced by ``_`` (§2), so a log line cannot be forged."""
    allowed = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789#-.,; ")
    return "".join(chr(byte) if byte in allowed else "_" for byte in note)
