"""How the ``ots`` runner judges a proof: the offline verifier, a provider name, and the rule for
a Bitcoin attestation that no header source can check.

The index needs more of a verdict than ``stampd verify`` does:

- a **provider** (a proof row always names one, and adoption and reuse accept only verdicts
  that do): an ``.ots`` proof is vouched for by the calendars that committed to it, so the
  provider is the sorted list of the calendar URIs in its Pending leaves — the same name
  whether the proof was just obtained, adopted from a sidecar or upgraded;
- a decision on **complete** proofs. With ``[anchor.bitcoin]`` configured, a Bitcoin
  attestation is checked against the node's header (reference/opentimestamps.md §5) and only
  a matching one makes the proof complete. Without a header source, the index cannot wait
  for one forever: a proof whose ops all evaluate (the decoder evaluates each one) and that
  has a Bitcoin attestation counts as complete — the reference client stops upgrading at
  that point too (§4) — with ``reason = "not_checked"`` and no block time: ``stampd verify``
  with a header source checks it later. Such a leaf cannot be told from one a calendar made
  for another commitment (an upgrade is a chain of ops, which fits any message; §2): the
  reference client's ``ots upgrade`` takes it too. So ``stampd config check`` warns when
  ``ots`` runs without ``[anchor.bitcoin]``, the daemon logs ``anchor_unchecked``, and the
  lie shows as ``merkle_root_mismatch`` as soon as a header source checks the proof.

Upgrades are checked before they are merged: with a header source, a calendar's reply whose
Bitcoin leaf does not match its block is refused (``verify``), so a proof never takes in a
fork that leads elsewhere.
"""

from __future__ import annotations

import dataclasses

from stampd.daemon.config.model import Config
from stampd.daemon.config.problems import ConfigProblem, config_error
from stampd.daemon.evidence.bitcoind import BitcoindError, BitcoindHeaders
from stampd.daemon.evidence.roles import ProviderFailure
from stampd.store.errors import ErrorClass, StampdError
from stampd.store.formats.ots import Timestamp, bitcoin_leaves
from stampd.store.ots_verifier import HeaderLookup, OtsDetail, OtsVerifier
from stampd.store.verify import DigestOf, Verdict

#: The provider of a proof that names no calendar (a complete proof from elsewhere).
NO_CALENDAR = "opentimestamps"


class OtsJobVerifier:
    """``OtsVerifier`` for the runner: names the provider, and without a header source counts
    a proof with a Bitcoin attestation as complete (module docstring)."""

    def __init__(self, headers: HeaderLookup | None) -> None:
        self.headers = headers
        self._offline = OtsVerifier(headers)

    def verify(
        self, data: bytes, *, source: str, digest_of: DigestOf, prefer: str | None = None
    ) -> Verdict:
        """The verdict on ``data`` for the index; ``prefer`` (the provider recorded with an
        archived copy) is kept as its provider. A header source that fails makes the proof
        ``unverifiable`` here (nothing is adopted or reused on a guess)."""
        try:
            verdict = self._offline.verify(data, source=source, digest_of=digest_of)
        except (StampdError, ValueError) as error:
            return Verdict(
                "ots", source, "unverifiable", "header_source", f"Bitcoin header source: {error}"
            )
        return self._for_index(verdict, prefer)

    def judge(self, data: bytes, *, source: str, digest: bytes) -> Verdict:
        """As :meth:`verify` for the sha256 ``digest``, but a failing header source raises its
        :class:`~stampd.store.errors.StampdError` (the upgrade round then backs off)."""
        return self._for_index(
            self._offline.verify(data, source=source, digest_of=lambda _algorithm: digest), None
        )

    def check_reply(self, reply: Timestamp) -> None:
        """Refuse (``ProviderFailure``, ``verify``) an upgrade whose Bitcoin leaf is not its
        block's merkle root; without a header source there is nothing to check."""
        if self.headers is None:
            return
        for height, root in bitcoin_leaves(reply):
            try:
                header = self.headers(height)
            except BitcoindError as error:
                raise ProviderFailure(
                    error.error_class, f"Bitcoin header source: {error.message}"
                ) from error
            if header is None:
                continue  # the node has not seen the block yet: judged when the proof is
            # §5: hashMerkleRoot is bytes 36..68 of the header, in internal order.
            if header[36:68] != root:
                raise ProviderFailure(
                    ErrorClass.VERIFY,
                    f"the upgrade's Bitcoin block {height} merkle root {root[::-1].hex()} is"
                    f" not the block's {header[36:68][::-1].hex()}: refused",
                )

    def close(self) -> None:
        """Close the header source's connections, when it has any (bitcoind's does; a
        lookup given by a test or a caller may be a plain function)."""
        close = getattr(self.headers, "close", None)
        if callable(close):
            close()

    def _for_index(self, verdict: Verdict, prefer: str | None) -> Verdict:
        detail = verdict.detail if isinstance(verdict.detail, OtsDetail) else None
        if (
            self.headers is None
            and detail is not None
            and verdict.status == "unverifiable"
            and verdict.reason == "not_checked"
        ):
            lowest = min(detail.bitcoin, key=lambda leaf: leaf.height)
            verdict = dataclasses.replace(
                verdict,
                status="valid",
                message=f"complete: Bitcoin block {lowest.height} (merkle root"
                f" {lowest.shown_root}), not checked against a block header (no"
                " [anchor.bitcoin] header source)",
                authority=f"Bitcoin block {lowest.height}",
            )
        if verdict.status not in ("valid", "pending"):
            return verdict
        name = prefer or ", ".join(sorted(set(detail.pending if detail else ()))) or NO_CALENDAR
        return dataclasses.replace(verdict, provider=name)


def header_source(config: Config) -> HeaderLookup | None:
    """The configured bitcoind as a header lookup, or None without ``[anchor.bitcoin]``;
    ConfigError naming the key when its secret file cannot be read."""
    bitcoin = config.anchor.bitcoin
    if bitcoin is None:
        return None
    password = None
    if bitcoin.secret_file is not None:
        try:
            password = bitcoin.secret_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            problem = ConfigProblem(
                "anchor.bitcoin.secret_file",
                str(bitcoin.secret_file),
                f"cannot be read ({error})",
                "make it readable by the stampd user",
            )
            raise config_error(config.source, [problem]) from None
    try:
        return BitcoindHeaders(
            bitcoin.url,
            cookie_file=bitcoin.cookie_file,
            username=bitcoin.username,
            password=password,
        )
    except BitcoindError as error:
        problem = ConfigProblem("anchor.bitcoin", None, error.message, error.hint)
        raise config_error(config.source, [problem]) from None
