"""store/ots_verifier.py: the offline walk of real proofs (../shared/vectors/ots, read in place)
to a verdict, with and without block headers (reference/opentimestamps.md §5).

The vectors bring no mainnet headers, so the tests build 80-byte headers whose merkle root
field holds the root the vectors README gives for each height (the real block 358391 has
the hello-world proof's root): the header check itself is what is under test.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from stampd.store.formats import hashes, ots, ots_ops
from stampd.store.formats.ots import OtsProof, Timestamp, bitcoin
from stampd.store.formats.ots_ops import sha256
from stampd.store.ots_verifier import HeaderLookup, OtsDetail, OtsVerifier, check
from stampd.store.verify import Verdict
from tests.conftest import shared_vectors

CLIENT = "opentimestamps-client"
HELLO_ROOT = "8a1b66ecb7cbd07d8139a7e7d7f2c41aab1f5009b8364aaf61d03ad245e47e00"
BAD_ROOT = "1bb49db87782170860c2e467994762f7f00c815d80d712e7eb9a7c14b9811f92"
#: A time for the made-up headers (2015-05-28T15:41:18Z): what the header says is reported.
NTIME = 1432827678
#: (vector, target file or None, height, merkle root in display order) from the vectors README.
COMPLETE = [
    ("hello-world.txt.ots", "hello-world.txt", 358391, HELLO_ROOT),
    (
        "empty.ots",
        "empty",
        129405,
        "db29fdc2c27a1531ae08a9dff2d9e4dfedd9c902d16de542d8666a27367e5b71",
    ),
    (
        "sha1/a-or-b.ots",
        "sha1/a",
        466906,
        "40c9303a5cb0a8c4b2676f4c6b101d37f83e9413f3856f356849bfb9438a7c26",
    ),
    (
        "sha1/a-or-b.ots",
        "sha1/b",
        466906,
        "40c9303a5cb0a8c4b2676f4c6b101d37f83e9413f3856f356849bfb9438a7c26",
    ),
]


def _header(root_display: str, ntime: int = NTIME) -> bytes:
    """An 80-byte header: version, previous hash, merkle root (internal order), time, bits,
    nonce."""
    return struct.pack(
        "<I32s32sIII", 2, b"\x11" * 32, bytes.fromhex(root_display)[::-1], ntime, 0x181B8330, 7
    )


def _headers(table: dict[int, bytes]) -> HeaderLookup:
    return table.get


def _data(name: str) -> bytes:
    return (shared_vectors("ots") / CLIENT / name).read_bytes()


def _digest_of(target: bytes) -> Callable[[str], bytes]:
    asked: list[str] = []

    def digest_of(algorithm: str) -> bytes:
        asked.append(algorithm)
        return hashlib.new(algorithm, target).digest()

    digest_of.asked = asked  # type: ignore[attr-defined]
    return digest_of


def _verify(name: str, target: str, headers: HeaderLookup | None = None) -> Verdict:
    return OtsVerifier(headers).verify(
        _data(name), source=name, digest_of=_digest_of(_data(target))
    )


def _detail(verdict: Verdict) -> OtsDetail:
    assert isinstance(verdict.detail, OtsDetail)
    return verdict.detail


@pytest.mark.parametrize(("name", "target", "height", "root"), COMPLETE)
def test_complete_proofs_are_valid_against_their_block_header(
    name: str, target: str, height: int, root: str
) -> None:
    verdict = _verify(name, target, _headers({height: _header(root)}))
    assert verdict.status == "valid", verdict.message
    assert verdict.kind == "ots" and verdict.reason is None
    assert verdict.gen_time == datetime.fromtimestamp(NTIME, UTC)
    assert verdict.authority == f"Bitcoin block {height}"
    assert verdict.algorithm == ("sha1" if name.startswith("sha1/") else "sha256")
    assert "existed no later than 2015-05-28T15:41:18Z" in (verdict.message or "")
    detail = _detail(verdict)
    assert detail.digest_matches is True
    assert [(c.height, c.shown_root, c.outcome) for c in detail.bitcoin] == [(height, root, "ok")]


@pytest.mark.parametrize(("name", "target", "height", "root"), COMPLETE)
def test_without_headers_a_complete_proof_is_not_checked_against_bitcoin(
    name: str, target: str, height: int, root: str
) -> None:
    verdict = _verify(name, target)
    assert verdict.status == "unverifiable" and not verdict.valid
    assert verdict.reason == "not_checked"
    assert "not checked against Bitcoin" in (verdict.message or "")
    assert f"block {height} has merkle root {root}" in (verdict.message or "")
    assert "[anchor.bitcoin]" in (verdict.message or "")
    assert [(c.height, c.outcome) for c in _detail(verdict).bitcoin] == [(height, "not_checked")]


def test_bad_stamp_fails_against_the_real_blocks_merkle_root() -> None:
    """The header of block 358391 holds hello-world's root: bad-stamp's leaf does not match."""
    headers = _headers({358391: _header(HELLO_ROOT)})
    assert _verify("hello-world.txt.ots", "hello-world.txt", headers).status == "valid"
    verdict = _verify("bad-stamp.txt.ots", "bad-stamp.txt", headers)
    assert verdict.status == "invalid" and verdict.reason == "merkle_root_mismatch"
    assert "does not match the block header" in (verdict.message or "")
    assert HELLO_ROOT in (verdict.message or "") and BAD_ROOT in (verdict.message or "")
    [leaf] = _detail(verdict).bitcoin
    assert (leaf.outcome, leaf.shown_root) == ("mismatch", BAD_ROOT)
    assert _detail(verdict).digest_matches is True
    # Against a header made to hold its own root, the same walk says valid: the header decides.
    assert _verify(
        "bad-stamp.txt.ots", "bad-stamp.txt", _headers({358391: _header(BAD_ROOT)})
    ).valid


def test_a_proof_for_other_data_is_invalid() -> None:
    verdict = _verify(
        "hello-world.txt.ots", "incomplete.txt", _headers({358391: _header(HELLO_ROOT)})
    )
    assert verdict.status == "invalid" and verdict.reason == "digest_mismatch"
    assert _detail(verdict).digest_matches is False
    assert "another file's proof" in (verdict.message or "")


def test_the_sha1_proof_asks_for_the_sha1_digest() -> None:
    digest_of = _digest_of(_data("sha1/a"))
    OtsVerifier().verify(_data("sha1/a-or-b.ots"), source="x", digest_of=digest_of)
    assert digest_of.asked == ["sha1"]  # type: ignore[attr-defined]


def test_pending_proofs_name_their_calendars() -> None:
    verdict = _verify("two-calendars.txt.ots", "two-calendars.txt")
    assert verdict.status == "pending" and verdict.reason == "pending"
    pending = _detail(verdict).pending
    assert set(pending) == {
        "https://alice.btc.calendar.opentimestamps.org",
        "https://bob.btc.calendar.opentimestamps.org",
    }
    assert all(uri in (verdict.message or "") for uri in pending)


def test_unknown_and_other_chain_attestations_are_reported() -> None:
    unknown = _verify("unknown-notary.txt.ots", "unknown-notary.txt")
    assert unknown.reason == "no_bitcoin_attestation" and unknown.status == "unverifiable"
    assert _detail(unknown).other == ("unknown attestation 0102030405060708",)
    chains = _verify("different-blockchains.txt.ots", "different-blockchains.txt")
    detail = _detail(chains)
    assert chains.reason == "not_checked" and "ethereum block 3283713" in detail.other
    assert [c.height for c in detail.bitcoin] == [455605]
    assert set(detail.pending) == {
        "https://eth.ots.eternitywall.com",
        "https://ots.eternitywall.it",
    }
    with_header = _verify(
        "different-blockchains.txt.ots",
        "different-blockchains.txt",
        _headers({455605: _header(detail.bitcoin[0].shown_root)}),
    )
    assert with_header.valid and _detail(with_header).note() == " (2 forks still pending)"


def test_one_matching_leaf_is_enough_and_every_leaf_is_reported() -> None:
    proof = ots.decode(_data("hello-world.txt.ots"))
    [(_, leaf_message)] = ots.bitcoin_leaves(proof.timestamp)
    # A second, made-up Bitcoin leaf at another height, whose header will not match.
    extra = ots.chain(
        leaf_message,
        [sha256()],
        Timestamp(hashlib.sha256(leaf_message).digest(), (bitcoin(400000),)),
    )
    both = OtsProof(proof.file_op, ots.merge(proof.timestamp, leaf_message, extra))
    headers = _headers({358391: _header(HELLO_ROOT), 400000: _header("00" * 32, NTIME + 10**6)})
    verdict = check(both, digest=proof.digest, headers=headers, source="x")
    assert verdict.valid and verdict.authority == "Bitcoin block 358391"
    assert [(c.height, c.outcome) for c in _detail(verdict).bitcoin] == [
        (358391, "ok"),
        (400000, "mismatch"),
    ]
    only_wrong = check(
        both, digest=proof.digest, headers=_headers({400000: _header("00" * 32)}), source="x"
    )
    assert only_wrong.valid is False and only_wrong.reason == "merkle_root_mismatch"
    assert [c.outcome for c in _detail(only_wrong).bitcoin] == ["not_checked", "mismatch"]


def test_a_bitcoin_leaf_whose_message_is_not_32_bytes_never_matches() -> None:
    file_op = ots.decode(_data("bitcoin.pdf.ots")).file_op  # sha1: a 20-byte digest
    root = hashlib.sha256(bytes(20)).digest()
    hashed = OtsProof(file_op, ots.chain(bytes(20), [sha256()], Timestamp(root, (bitcoin(5),))))
    headers = _headers({5: _header(root[::-1].hex())})
    assert check(hashed, digest=bytes(20), headers=headers, source="x").valid
    # The bare 20-byte digest attested directly: no header's 32-byte root can equal it.
    odd = OtsProof(file_op, Timestamp(bytes(20), (bitcoin(5),)))
    verdict = check(odd, digest=bytes(20), headers=headers, source="x")
    assert verdict.reason == "merkle_root_mismatch"


def test_undecodable_proofs_and_missing_digests_are_verdicts_not_exceptions() -> None:
    data = _data("hello-world.txt.ots")
    verdict = OtsVerifier().verify(data[:-1], source="x", digest_of=_digest_of(b""))
    assert verdict.status == "invalid" and verdict.reason == "parse"
    assert "at byte" in (verdict.message or "")

    def unavailable(algorithm: str) -> bytes:
        raise ValueError(algorithm)

    verdict = OtsVerifier().verify(data, source="x", digest_of=unavailable)
    assert verdict.status == "unverifiable" and verdict.reason == "digest_unavailable"
    with pytest.raises(ValueError, match="79 bytes for block 358391"):
        OtsVerifier(_headers({358391: bytes(79)})).verify(
            data, source="x", digest_of=_digest_of(_data("hello-world.txt"))
        )


def test_the_verdict_is_one_json_document() -> None:
    verdict = _verify(
        "hello-world.txt.ots", "hello-world.txt", _headers({358391: _header(HELLO_ROOT)})
    )
    data = json.loads(json.dumps(verdict.to_dict()))
    assert data["status"] == "valid" and data["gen_time"] == "2015-05-28T15:41:18Z"
    assert data["bitcoin"] == [
        {
            "height": 358391,
            "merkle_root": HELLO_ROOT,
            "header": "ok",
            "block_time": "2015-05-28T15:41:18Z",
        }
    ]
    assert data["digest_matches"] is True and data["pending"] == [] and data["other"] == []
    assert verdict.detail is not None and verdict.detail.serial is None


def test_the_pure_ripemd160_verifies_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    headers = _headers({358391: _header(HELLO_ROOT)})
    with_openssl = _verify("hello-world.txt.ots", "hello-world.txt", headers)
    monkeypatch.setattr(hashes, "HASHLIB_RIPEMD160", False)
    ots_ops._unary.cache_clear()  # results memoised under hashlib would hide the fallback
    assert _verify("hello-world.txt.ots", "hello-world.txt", headers) == with_openssl
