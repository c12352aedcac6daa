"""Which roots a ``tsr`` token must chain to when ``stampd verify`` checks it, and their names.

The roots are the ``--trust`` files when given, else each configured TSA's ``trust`` file (the
system bundle when unset) — the same roots the daemon checks its tokens against, so a token
that ``stampd run`` accepted verifies here, and the verdict names the TSA whose roots matched.
When a token chains to none of them, the message says which roots were tried, by the option
or configuration key the operator can change, and what to do.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cryptography import x509

from stampd.daemon.config.model import Config
from stampd.daemon.evidence.entries import VerifyOptions
from stampd.store.trust import SYSTEM_BUNDLE, load_anchors, load_certificates
from stampd.store.tsr_verifier import AnchorSet, TsrVerifier
from stampd.store.verify import DigestOf, Verdict, Verifier


class AdvisingVerifier:
    """A :class:`TsrVerifier` that says what to do about a token without its TSA's
    certificate (made without certReq): give it with ``--untrusted``."""

    def __init__(self, verifier: TsrVerifier, untrusted: Path | None) -> None:
        self._verifier = verifier
        self._untrusted = untrusted

    def verify(
        self, data: bytes, *, source: str, digest_of: DigestOf, prefer: str | None = None
    ) -> Verdict:
        """The verdict of the wrapped verifier, with the tip added where it applies."""
        verdict = self._verifier.verify(data, source=source, digest_of=digest_of, prefer=prefer)
        if verdict.reason != "signer_unavailable":
            return verdict
        if self._untrusted is None:
            tip = "give the TSA's certificate with --untrusted CERTS.pem"
        else:
            tip = (
                f"{self._untrusted} does not hold it either: give the TSA's own certificate"
                " with --untrusted"
            )
        return replace(verdict, message=f"{verdict.message}: {tip}")


def verifier_from_options(options: VerifyOptions) -> Verifier:
    """The ``tsr`` verifier of ``stampd verify`` (the registry's ``verifier`` entry)."""
    extra = load_certificates(options.untrusted) if options.untrusted else ()
    if options.trust:
        verifier = TsrVerifier(
            [AnchorSet(None, load_anchors(file)) for file in options.trust],
            extra_certificates=extra,
            roots="--trust " + ", ".join(str(file) for file in options.trust),
            root_remedy="give its root certificate with --trust ROOT.pem",
        )
    else:
        verifier = _configured(options.config, extra)
    return AdvisingVerifier(verifier, options.untrusted)


def _configured(config: Config | None, extra: tuple[x509.Certificate, ...]) -> TsrVerifier:
    tsas = config.timestamp.tsa if config is not None else ()
    described = "; ".join(
        f'timestamp.tsa[{number}] "{tsa.name}": '
        + (f"trust = {tsa.trust}" if tsa.trust else f"trust unset, so {SYSTEM_BUNDLE}")
        for number, tsa in enumerate(tsas)
    )
    return TsrVerifier(
        [AnchorSet(tsa.name, load_anchors(tsa.trust or SYSTEM_BUNDLE)) for tsa in tsas],
        extra_certificates=extra,
        roots=described or "no [[timestamp.tsa]] is configured",
        root_remedy="add its root certificate to trust (or --trust ROOT.pem)",
    )
