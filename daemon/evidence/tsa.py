"""An RFC 3161 TSA over HTTP (RFC 3161 §3.4; reference/rfc3161.md §1).

One request per call: POST the TimeStampReq, read at most :data:`MAX_RESPONSE_BYTES`, check
status and Content-Type, parse, and verify the reply completely — against the request (nonce,
imprint, policy, time window) and as a stored token would be, by the same
:class:`~stampd.store.tsr_verifier.TsrVerifier` that checks sidecars (signature, ESSCertID,
EKU, chain to this TSA's roots). Only then is it returned (DESIGN rule 3). Every failure is a
:class:`ProviderFailure` with its stable ``error_class``.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from stampd.daemon.evidence.roles import ProviderFailure, Stamped
from stampd.store.errors import ErrorClass
from stampd.store.formats.tsp import (
    TimestampRejected,
    TokenInvalid,
    TspParseError,
    build_request,
    check_reply,
    parse_response,
)
from stampd.store.trust import SYSTEM_BUNDLE
from stampd.store.tsr_verifier import AnchorSet, TsrVerifier
from stampd.store.verify import Verdict

#: Real replies are a few kilobytes (a token with four certificates is under 8 KiB).
MAX_RESPONSE_BYTES = 1 << 20
REQUEST_TYPE = "application/timestamp-query"
#: RFC 3161 §3.4 says timestamp-reply; some servers use the older timestamp-response.
REPLY_TYPES = ("application/timestamp-reply", "application/timestamp-response")
#: Keys the credentials' fingerprint in `identity`: comparable inside this process, and
#: useless for guessing a secret should an identity ever be printed (DESIGN rule 7).
_IDENTITY_KEY = secrets.token_bytes(32)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: delay-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


class Rfc3161Provider:
    """One configured TSA."""

    def __init__(
        self,
        *,
        name: str,
        url: str,
        client: httpx.AsyncClient,
        anchors: Sequence[x509.Certificate],
        timeout: float,
        min_interval: float = 0.0,
        policy: str | None = None,
        authorization: str | None = None,
        key: str | None = None,
        trust_file: Path | None = None,
    ) -> None:
        self.name = name
        #: Where this TSA is configured (``timestamp.tsa[2]``) and its ``trust`` file (None:
        #: unset, the system bundle), for messages that tell the operator what to change.
        self.key = key
        self.trust_file = trust_file
        self.url = url
        self.min_interval = min_interval
        self._client = client
        self._anchors = tuple(anchors)
        roots, remedy = self._roots_described()
        self._verifier = TsrVerifier(
            [AnchorSet(name, self._anchors)], roots=roots, root_remedy=remedy
        )
        self._timeout = timeout
        self._policy = policy
        self._authorization = authorization
        credentials = None
        if authorization is not None:
            credentials = hashlib.blake2b(authorization.encode(), key=_IDENTITY_KEY).hexdigest()
        # Whatever decides how this TSA answers: a reload that changes any of it (a fixed
        # secret, the right trust file, a longer timeout) gives the TSA a fresh breaker.
        self._identity = (
            name,
            url,
            policy,
            timeout,
            credentials,
            tuple(cert.fingerprint(hashes.SHA256()) for cert in self._anchors),
        )

    @property
    def identity(self) -> tuple[object, ...]:
        """Name, URL, policy, timeout, credentials (keyed digest) and trust roots."""
        return self._identity

    async def timestamp(self, digest: bytes, algorithm: str) -> Stamped:
        request = build_request(digest, algorithm, policy=self._policy)
        headers = {"Content-Type": REQUEST_TYPE, "Accept": REPLY_TYPES[0]}
        if self._authorization is not None:
            headers["Authorization"] = self._authorization
        sent_at = datetime.now(UTC)
        deadline = time.monotonic() + self._timeout
        try:
            async with self._client.stream(
                "POST", self.url, content=request.der, headers=headers, timeout=self._timeout
            ) as response:
                self._check_status(response)
                body = await self._read_capped(response, deadline)
        except httpx.TimeoutException as error:
            raise ProviderFailure(
                ErrorClass.TIMEOUT,
                f"no answer within {self._timeout:g} s ({type(error).__name__})",
            ) from error
        except httpx.TransportError as error:
            raise ProviderFailure(ErrorClass.NETWORK, f"{type(error).__name__}: {error}") from error
        received_at = datetime.now(UTC)
        try:
            parsed = parse_response(body)
            check_reply(parsed.token, request, sent_at=sent_at, received_at=received_at)
        except TimestampRejected as error:
            raise ProviderFailure(ErrorClass.REJECTED, error.message) from error
        except TspParseError as error:
            raise ProviderFailure(ErrorClass.PARSE, error.message) from error
        except TokenInvalid as error:
            raise ProviderFailure(ErrorClass.VERIFY, f"{error.reason}: {error.message}") from error
        verdict = self._verifier.check(parsed.token, source=self.url, digest=digest)
        if not verdict.valid:
            raise ProviderFailure(ErrorClass.VERIFY, f"{verdict.reason}: {self._explain(verdict)}")
        return Stamped(response=body, verdict=verdict)

    def _roots_described(self) -> tuple[str, str]:
        """Where this TSA's roots come from and what to do when a token does not chain to
        them, naming the configuration the operator can change."""
        where = f'{self.key or "[[timestamp.tsa]]"} "{self.name}"'
        setting = f"{self.key}.trust" if self.key else "its trust"
        if self.trust_file is None:
            return (
                f"{where}: trust unset, so {SYSTEM_BUNDLE}",
                f"set {setting} to a PEM file holding the TSA's root certificate",
            )
        return (
            f"{where}: trust = {self.trust_file}",
            f"add the TSA's root certificate to {self.trust_file}, or point"
            f" {setting} at a file that holds it",
        )

    @staticmethod
    def _explain(verdict: Verdict) -> str:
        """The token's failure; the TSA's own fault named as such."""
        if verdict.reason == "signer_unavailable":
            # RFC 3161 §2.4.1: with certReq TRUE (stampd always sets it) the TSA MUST
            # include its certificate.
            return (
                f"{verdict.message}; the TSA left it out although the request asked for it"
                " (certReq): report it to the TSA's operator"
            )
        return verdict.message or ""

    def _check_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if status == 200:
            kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind not in REPLY_TYPES:
                raise ProviderFailure(
                    ErrorClass.PARSE,
                    f"the reply's Content-Type is {kind or 'missing'!r}, not {REPLY_TYPES[0]}",
                    http_status=status,
                )
            return
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        if status == 429:
            raise ProviderFailure(
                ErrorClass.RATE_LIMITED,
                "HTTP 429 Too Many Requests",
                http_status=status,
                retry_after=retry_after,
            )
        if status in (401, 403):
            raise ProviderFailure(
                ErrorClass.AUTH,
                f"HTTP {status}: the TSA refused our credentials (check auth, username and"
                " secret_file of this TSA)",
                http_status=status,
            )
        if status == 402:
            raise ProviderFailure(
                ErrorClass.QUOTA,
                "HTTP 402: the TSA's quota or subscription is exhausted",
                http_status=status,
            )
        raise ProviderFailure(
            ErrorClass.HTTP_STATUS,
            f"HTTP {status} {response.reason_phrase}".strip(),
            http_status=status,
            retry_after=retry_after,
        )

    @staticmethod
    async def _read_capped(response: httpx.Response, deadline: float) -> bytes:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
            raise ProviderFailure(
                ErrorClass.PARSE,
                f"the reply is {declared} bytes, over the {MAX_RESPONSE_BYTES} cap",
                http_status=response.status_code,
            )
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_RESPONSE_BYTES:
                raise ProviderFailure(
                    ErrorClass.PARSE,
                    f"the reply exceeds the {MAX_RESPONSE_BYTES}-byte cap",
                    http_status=response.status_code,
                )
            if time.monotonic() > deadline:  # a trickling server must not hold a job forever
                raise httpx.ReadTimeout("the reply did not finish in time")
        return bytes(body)
