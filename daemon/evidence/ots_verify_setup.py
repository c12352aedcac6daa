"""The ``ots`` verifier of ``stampd verify``: the header source from ``[anchor.bitcoin]``.

reference/opentimestamps.md §5: a Bitcoin attestation is checked against the block header at
its height, and the preferred header source is the operator's own bitcoind. When the
configuration has an ``[anchor.bitcoin]`` table (``url``, and ``cookie_file`` or ``username``
+ ``secret_file``), every Bitcoin leaf is checked against that node; without one (no
configuration at all, as with ``stampd verify --ots FILE PATH``), the verdict lists each leaf's
height and merkle root as "not checked against Bitcoin" — never valid (DESIGN §8), as
``ots --no-bitcoin verify`` exits 1 there too.

Two things are added around the pure :class:`~stampd.store.ots_verifier.OtsVerifier`:

- a size cap, checked before decoding: real proofs are a few kilobytes, and the codec
  evaluates every op while it reads (keccak256 in pure Python is slow), so a crafted file
  of megabytes could hold ``stampd verify`` for minutes;
- a node that fails (down, wrong cookie, a proxy in the way) is the header source's fault, not
  the proof's: the verdict is ``unverifiable`` with the node's error class, says what to do,
  and still lists the leaves' heights and merkle roots, so the proof can be checked by hand.
"""

from __future__ import annotations

from dataclasses import replace

from stampd.daemon.config.model import Config
from stampd.daemon.evidence.bitcoind import BitcoindError, BitcoindHeaders
from stampd.daemon.evidence.entries import VerifyOptions
from stampd.daemon.evidence.tsa_setup import read_secret
from stampd.store.errors import ErrorClass
from stampd.store.kinds import EvidenceKind
from stampd.store.ots_verifier import OtsVerifier
from stampd.store.verify import DigestOf, Verdict, Verifier

#: The largest ``.ots`` proof ``stampd verify`` decodes. The upstream vectors are 175 B to
#: 3.8 KB; a proof with hundreds of forks stays far below this.
MAX_OTS_BYTES = 1024 * 1024


def header_source(config: Config | None) -> BitcoindHeaders | None:
    """The configured bitcoind as a header lookup, or None without ``[anchor.bitcoin]``.

    The password of ``username`` is read from ``secret_file`` now (DESIGN rule 7); a file
    that cannot serve raises :class:`~stampd.daemon.config.problems.ConfigError` naming
    ``anchor.bitcoin.secret_file``. The cookie file is read at each call instead (bitcoind
    writes a new one at every start).
    """
    bitcoin = None if config is None else config.anchor.bitcoin
    if bitcoin is None:
        return None
    password = None
    if bitcoin.secret_file is not None:
        password = read_secret(bitcoin.secret_file, "anchor.bitcoin.secret_file")
    return BitcoindHeaders(
        bitcoin.url,
        cookie_file=bitcoin.cookie_file,
        username=bitcoin.username,
        password=password,
    )


class CliOtsVerifier:
    """:class:`OtsVerifier` with the size cap, and a failing node reported as such."""

    def __init__(self, headers: BitcoindHeaders | None, *, max_bytes: int = MAX_OTS_BYTES) -> None:
        self._headers = headers
        self._max_bytes = max_bytes

    def verify(
        self, data: bytes, *, source: str, digest_of: DigestOf, prefer: str | None = None
    ) -> Verdict:
        """The verdict on the proof ``data``; never raises for a bad proof or a failing node."""
        if len(data) > self._max_bytes:
            return Verdict(
                EvidenceKind.OTS,
                source,
                "invalid",
                ErrorClass.PARSE,
                f"the proof is {len(data):,} bytes, more than the {self._max_bytes:,} bytes"
                " stampd decodes (real .ots proofs are a few kilobytes): refused unread; it is"
                " not an OpenTimestamps proof stampd or the ots client wrote",
            )
        # Offline first: a proof that is invalid, pending or for other data says so without
        # asking the node, and the node is asked only when there are Bitcoin leaves to check.
        unchecked = OtsVerifier(None).verify(data, source=source, digest_of=digest_of)
        if self._headers is None or unchecked.reason != "not_checked":
            return unchecked
        try:
            return OtsVerifier(self._headers).verify(data, source=source, digest_of=digest_of)
        except BitcoindError as error:
            # Still the leaves' heights and merkle roots, for a check by hand.
            advice = f" ({error.hint})" if error.hint else ""
            return replace(
                unchecked,
                reason=error.error_class,
                message=f"the header source failed: {error.message}{advice}; {unchecked.message}",
            )


def verifier_from_options(options: VerifyOptions) -> Verifier:
    """The ``ots`` verifier of ``stampd verify`` (the registry's ``verifier`` entry)."""
    return CliOtsVerifier(header_source(options.config))
