"""store/formats/ots*.py against the real proofs (../shared/vectors/ots, read in place) and the
limits of reference/opentimestamps.md §1, plus hypothesis: decode(encode(t)) == t, and no input
raises anything but OtsDecodeError.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stampd.store.errors import ErrorClass, StampdError
from stampd.store.formats import hashes, ots, ots_ops
from stampd.store.formats.ots import (
    MAGIC,
    BlockHeader,
    OtsDecodeError,
    OtsMergeError,
    OtsProof,
    Pending,
    Timestamp,
    Unknown,
    bitcoin,
)
from stampd.store.formats.ots_batch import make_batch
from stampd.store.formats.ots_ops import (
    HEXLIFY,
    KECCAK256,
    REVERSE,
    RIPEMD160,
    SHA1,
    SHA256,
    Op,
    OpError,
    append,
    prepend,
    sha256,
)
from stampd.store.formats.ots_wire import varbytes, varuint
from tests.conftest import shared_vector_names, shared_vectors

CLIENT = "opentimestamps-client"
VALID = [f"{CLIENT}/{name}" for name in shared_vector_names("ots", f"{CLIENT}/*.ots")] + [
    f"{CLIENT}/sha1/{name}" for name in shared_vector_names("ots", f"{CLIENT}/sha1/*.ots")
]
INVALID = [f"{CLIENT}/invalid/{name}" for name in shared_vector_names("ots", f"{CLIENT}/invalid/*")]
INVALID = [name for name in INVALID if name.endswith(".ots")] or INVALID[:1]
#: The (height, merkle root in display order) of each complete proof (vectors README).
ROOTS = {
    "hello-world.txt.ots": (
        358391,
        "8a1b66ecb7cbd07d8139a7e7d7f2c41aab1f5009b8364aaf61d03ad245e47e00",
    ),
    "bad-stamp.txt.ots": (
        358391,
        "1bb49db87782170860c2e467994762f7f00c815d80d712e7eb9a7c14b9811f92",
    ),
    "empty.ots": (129405, "db29fdc2c27a1531ae08a9dff2d9e4dfedd9c902d16de542d8666a27367e5b71"),
    "bitcoin.pdf.ots": (465751, "98989f8d2e522d52356cf14ade63bdab44687dd0c4c8e3722c3f39bf726b0876"),
    "gdp2q25-2nd.pdf.ots": (
        912095,
        "936131994129988e1932d8c1c6a9780fd42ae4c87204cfb0ac852be1250039ae",
    ),
    "a-or-b.ots": (466906, "40c9303a5cb0a8c4b2676f4c6b101d37f83e9413f3856f356849bfb9438a7c26"),
}
ALICE = "https://alice.btc.calendar.opentimestamps.org"


@functools.cache
def _bytes(name: str) -> bytes:
    return (shared_vectors("ots") / name).read_bytes()


def _vector(name: str) -> bytes:
    """A real proof, read in place; the test skips in a lone clone (tests/conftest.py)."""
    shared_vectors("ots")
    return _bytes(name)


def _target(name: str) -> Path | None:
    path = shared_vectors("ots") / name.removesuffix(".ots")
    return path if path.is_file() else None


def _proof(digest: bytes, tail: bytes, op: int = SHA256) -> bytes:
    return MAGIC + b"\x01" + bytes([op]) + digest + tail


def _refused(data: bytes, *words: str) -> OtsDecodeError:
    with pytest.raises(OtsDecodeError) as caught:
        ots.decode(data)
    for word in words:
        assert word in caught.value.message
    return caught.value


#: An attestation entry: 00, the Pending or Bitcoin tag (reference §1.4).
PENDING = b"\x00" + bytes.fromhex("83dfe30d2ef90c8e")
BITCOIN = b"\x00" + bytes.fromhex("0588960d73d71901")
PENDING_LEAF = PENDING + varbytes(varbytes(ALICE.encode()))


@pytest.mark.parametrize("name", VALID)
def test_every_valid_vector_round_trips_byte_for_byte(name: str) -> None:
    data = _vector(name)
    proof = ots.decode(data)
    assert ots.encode(proof) == data
    assert ots.decode(ots.encode(proof)) == proof
    target = _target(name)
    if target is not None:
        assert proof.digest == hashlib.new(proof.algorithm, target.read_bytes()).digest()
    short = name.rsplit("/", 1)[-1]
    if short in ROOTS:
        height, root = ROOTS[short]
        assert (height, bytes.fromhex(root)[::-1]) in ots.bitcoin_leaves(proof.timestamp)


@pytest.mark.parametrize(
    ("name", "words", "offset"),
    [
        ("bad-major-version.ots", ("major version 1151 as ff08", "only version 1"), 31),
        ("exceeds-max-msg-length.ots", ("result of append is 4112 bytes", "4096"), None),
        ("invalid-file-digest-type.ots", ("file hash op 0xf3 is not a hash",), 32),
    ],
)
def test_invalid_vectors_are_refused_with_the_reason(
    name: str, words: tuple[str, ...], offset: int | None
) -> None:
    data = _vector(f"{CLIENT}/invalid/{name}")  # skips (with the reason) in a lone clone
    assert f"{CLIENT}/invalid/{name}" in INVALID
    error = _refused(data, *words)
    assert isinstance(error, StampdError)
    assert error.error_class == ErrorClass.PARSE == "parse"
    assert error.offset is not None and f"at byte {error.offset}" in error.message
    if offset is not None:
        assert error.offset == offset


def test_sha1_and_keccak_proofs_decode() -> None:
    pdf = ots.decode(_vector(f"{CLIENT}/bitcoin.pdf.ots"))
    assert pdf.algorithm == "sha1"
    assert pdf.digest.hex() == "8de2fdb04edce612738eb51e14ecc426381f8ed8"
    pair = ots.decode(_vector(f"{CLIENT}/sha1/a-or-b.ots"))
    root = shared_vectors("ots") / CLIENT / "sha1"
    a, b = (root / "a").read_bytes(), (root / "b").read_bytes()
    assert a != b and pair.digest == hashlib.sha1(a).digest() == hashlib.sha1(b).digest()
    chains = ots.decode(_vector(f"{CLIENT}/different-blockchains.txt.ots"))
    ops = {op.tag for node in chains.timestamp.nodes() for op, _ in node.ops}
    assert KECCAK256 in ops
    kinds = {attestation for _, attestation in chains.timestamp.leaves()}
    assert BlockHeader("ethereum", 3283713) in kinds and bitcoin(455605) in kinds
    assert {
        Pending("https://eth.ots.eternitywall.com"),
        Pending("https://ots.eternitywall.it"),
    } <= kinds


def test_unknown_attestations_are_kept_verbatim() -> None:
    proof = ots.decode(_vector(f"{CLIENT}/unknown-notary.txt.ots"))
    assert [a for _, a in proof.timestamp.leaves()] == [Unknown(bytes(range(1, 9)), b"x" * 46)]
    both = ots.decode(_vector(f"{CLIENT}/known-and-unknown-notary.txt.ots"))
    leaves = {a for _, a in both.timestamp.leaves()}
    assert leaves == {
        Pending("https://bob.btc.calendar.opentimestamps.org"),
        Unknown(bytes(range(1, 9)), b"x" * 46),
    }


def test_incomplete_txt_annotated_bytes() -> None:
    """reference §1.6, byte by byte: nonces, calendar time, HMAC, URI."""
    data = _vector(f"{CLIENT}/incomplete.txt.ots")
    assert len(data) == 175
    proof = ots.decode(data)
    target = _target(f"{CLIENT}/incomplete.txt.ots")
    assert target is not None and proof.digest == hashlib.sha256(target.read_bytes()).digest()
    assert proof.digest.hex().startswith("05c4f616") and proof.digest.hex().endswith("97af9")
    tail = (
        bytes.fromhex(
            "f010e754bf93806a7ebaa680ef7bd0114bf408"
            "f010b573e8850cfd9e63d1f043fbb6fc250e08"
            "f10457cfa5c4"
            "f0086fb1ac8d4e4eb0e7"
            "0083dfe30d2ef90c8e2e2d"
        )
        + ALICE.encode()
    )
    assert data == MAGIC + b"\x01\x08" + proof.digest + tail
    expected = ots.chain(
        proof.digest,
        [
            append(bytes.fromhex("e754bf93806a7ebaa680ef7bd0114bf4")),
            sha256(),
            append(bytes.fromhex("b573e8850cfd9e63d1f043fbb6fc250e")),
            sha256(),
            prepend((0x57CFA5C4).to_bytes(4, "big")),  # the calendar's unix time, 2016-09-07
            append(bytes.fromhex("6fb1ac8d4e4eb0e7")),
        ],
        Timestamp(_leaf_message(proof.timestamp), (Pending(ALICE),)),
    )
    assert proof.timestamp == expected
    [(uri, commitment)] = ots.pending_leaves(proof.timestamp)
    assert uri == ALICE and len(commitment) == 44 and commitment[:4] == bytes.fromhex("57cfa5c4")


def _leaf_message(tree: Timestamp) -> bytes:
    [(node, _)] = list(tree.leaves())
    return node.message


def test_two_calendars_is_one_fork() -> None:
    proof = ots.decode(_vector(f"{CLIENT}/two-calendars.txt.ots"))
    node = proof.timestamp
    while len(node.ops) == 1:
        node = node.ops[0][1]
    assert [op.tag for op, _ in node.ops] == [0xF0, 0xF0]
    assert {uri for uri, _ in ots.pending_leaves(proof.timestamp)} == {
        ALICE,
        "https://bob.btc.calendar.opentimestamps.org",
    }


def test_a_non_canonical_file_decodes_to_the_same_tree_and_re_encodes_canonically() -> None:
    digest = bytes(32)
    first = b"\xf0\x01\x01\x08" + PENDING_LEAF
    second = b"\xf0\x01\x02\x08" + PENDING_LEAF
    bitcoin_leaf = BITCOIN + b"\x01\x05"
    canonical = _proof(digest, b"\xff" + bitcoin_leaf + b"\xff" + first + second)
    swapped = _proof(digest, b"\xff" + second + b"\xff" + first + bitcoin_leaf)
    assert ots.decode(swapped) == ots.decode(canonical)
    assert ots.encode(ots.decode(swapped)) == canonical
    # The same op twice is one child holding both subtrees.
    twice = _proof(digest, b"\xff" + first + b"\xf0\x01\x01\x08" + bitcoin_leaf)
    merged = ots.decode(twice).timestamp
    assert len(merged.ops) == 1 and len(list(merged.leaves())) == 2


def test_the_pure_ripemd160_matches_hashlib_and_reads_the_same_proofs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert hashes.pure_ripemd160(b"").hex() == "9c1185a5c5e9fc54612808977ee8f548b2258d31"
    assert hashes.pure_ripemd160(b"abc").hex() == "8eb208f7e05d987a9b044a8e98c6b087f15a0bfc"
    assert (
        hashes.pure_ripemd160(b"1234567890" * 8).hex() == "9b752e45573d4b39f4dbd3323cab82bf63326bfb"
    )
    data = _vector(f"{CLIENT}/hello-world.txt.ots")
    with_openssl = ots.decode(data)
    monkeypatch.setattr(hashes, "HASHLIB_RIPEMD160", False)
    ots_ops._unary.cache_clear()  # results memoised under hashlib would hide the fallback
    assert Op(RIPEMD160).apply(b"abc") == hashes.pure_ripemd160(b"abc")
    assert ots.decode(data) == with_openssl
    if hashes._hashlib_has_ripemd160():
        for size in (1, 55, 56, 64, 119, 120, 200):
            chunk = bytes(range(size % 256)) * (size // 256 + 1)
            assert (
                hashes.pure_ripemd160(chunk[:size])
                == hashlib.new("ripemd160", chunk[:size]).digest()
            )


def test_keccak256_is_the_original_keccak_not_sha3() -> None:
    assert (
        hashes.keccak256(b"").hex()
        == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    )
    assert (
        hashes.keccak256(b"abc").hex()
        == "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"
    )
    assert hashes.keccak256(b"abc") != hashlib.sha3_256(b"abc").digest()
    for size in (0, 1, 135, 136, 137, 300):
        data = bytes(size)
        assert hashes.keccak(data, rate=136, pad=0x06, size=32) == hashlib.sha3_256(data).digest()


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", ("ends inside the magic",)),
        (MAGIC[:10], ("ends inside the magic",)),
        (b"\x01" + MAGIC[1:] + b"\x01\x08", ("wrong magic",)),
        (MAGIC + b"\x02\x08" + bytes(32) + PENDING_LEAF, ("major version 2",)),
        (MAGIC + b"\x81\x80\x00\x08", ("major version 1 ", "not supported")),  # not 01
        (MAGIC + b"\xff" * 9 + b"\x01", ("larger than 63 bits",)),
        (MAGIC + b"\x80" * 9 + b"\x80\x00", ("longer than 63 bits",)),
        (_proof(bytes(31), b""), ("ends inside the sha256 file digest",)),
        (_proof(bytes(32), b""), ("ends inside the timestamp entry",)),
        (_proof(bytes(32), PENDING_LEAF + b"\x00"), ("1 bytes of trailing garbage",)),
        (_proof(bytes(32), b"\x09" + PENDING_LEAF), ("unknown op tag 0x09",)),
        (_proof(bytes(32), b"\xff\xff" + PENDING_LEAF), ("unknown op tag 0xff",)),
        (_proof(bytes(32), b"\xf0\x00" + PENDING_LEAF), ("append argument is 0 bytes",)),
        (_proof(bytes(32), b"\xf1" + varuint(4097)), ("prepend argument is 4097 bytes",)),
        (_proof(bytes(32), b"\xf0" + varbytes(bytes(2017)) + b"\xf3"), ("hexlify input is 2049",)),
        (
            _proof(bytes(32), b"\xf0" + varbytes(bytes(4064)) + b"\xf1\x01\x00"),
            ("result of prepend is 4097 bytes",),
        ),
        (_proof(bytes(32), b"\x00" + bytes(8) + varuint(8193)), ("8193 bytes, outside 0..8192",)),
        (_proof(bytes(32), PENDING + varbytes(varbytes(b"https://a b"))), ("characters outside",)),
        (_proof(bytes(32), PENDING + varbytes(varbytes(b"a" * 1001))), ("1001 bytes, outside",)),
        (_proof(bytes(32), BITCOIN + b"\x02\x01\x00"), ("has 1 bytes after its payload",)),
        (_proof(bytes(32), BITCOIN + b"\x01\x81"), ("ends inside the block height",)),
    ],
)
def test_every_limit_is_a_decode_error_naming_what_and_where(
    data: bytes, words: tuple[str, ...]
) -> None:
    error = _refused(data, *words)
    assert error.error_class == "parse" and "at byte" in error.message


def test_depth_256_is_accepted_and_257_refused() -> None:
    deepest = _proof(bytes(32), b"\xf2" * 256 + PENDING_LEAF)
    tree = ots.decode(deepest).timestamp
    assert ots.encode(ots.decode(deepest)) == deepest and tree == ots.decode(deepest).timestamp
    _refused(_proof(bytes(32), b"\xf2" * 257 + PENDING_LEAF), "nested deeper than 256")
    too_deep = ots.chain(bytes(32), [Op(REVERSE)] * 257, Timestamp(bytes(32), (Pending(ALICE),)))
    with pytest.raises(ValueError, match="deeper than 256"):
        ots.encode(OtsProof(Op(SHA256), too_deep))


def test_every_truncation_of_a_real_proof_is_a_decode_error() -> None:
    data = _vector(f"{CLIENT}/hello-world.txt.ots")
    for end in range(len(data)):
        with pytest.raises(OtsDecodeError):
            ots.decode(data[:end])


def test_trees_built_in_code_are_checked() -> None:
    with pytest.raises(ValueError, match="not sha256"):
        Timestamp(bytes(32), ops=((sha256(), Timestamp(bytes(32), (Pending(ALICE),))),))
    with pytest.raises(OpError, match=r"outside 1\.\.4096"):
        append(b"")
    with pytest.raises(ValueError, match="outside A-Z"):
        Pending("https://a.example/?q=1")
    with pytest.raises(ValueError, match="a hash of the file"):
        OtsProof(Op(HEXLIFY), Timestamp(bytes(32), (Pending(ALICE),)))
    with pytest.raises(ValueError, match="cannot be written"):
        ots.encode(OtsProof(Op(SHA1), Timestamp(bytes(20))))


def _reply_to(commitment: bytes, height: int) -> Timestamp:
    return ots.chain(
        commitment, [sha256()], Timestamp(hashlib.sha256(commitment).digest(), (bitcoin(height),))
    )


def test_merge_adds_the_reply_at_the_asked_commitment_only() -> None:
    proof = ots.decode(_vector(f"{CLIENT}/two-calendars.txt.ots"))
    [(alice, at_alice), (bob, at_bob)] = sorted(ots.pending_leaves(proof.timestamp))
    assert alice == ALICE and "bob" in bob
    body = ots.encode_reply(_reply_to(at_alice, 700000))
    reply = ots.decode_reply(body, at_alice)
    upgraded = ots.merge(proof.timestamp, at_alice, reply)
    assert ots.bitcoin_leaves(upgraded) == [(700000, hashlib.sha256(at_alice).digest())]
    assert sorted(ots.pending_leaves(upgraded)) == [(alice, at_alice), (bob, at_bob)]  # only adds
    again = ots.decode(ots.encode(OtsProof(proof.file_op, upgraded)))
    assert again.timestamp == upgraded
    assert ots.merge(upgraded, at_alice, reply) == upgraded  # merging twice changes nothing
    with pytest.raises(OtsMergeError, match="not at the commitment"):
        ots.merge(proof.timestamp, at_bob, reply)
    with pytest.raises(OtsMergeError, match="no node of the proof"):
        ots.merge(proof.timestamp, b"\x01" * 44, _reply_to(b"\x01" * 44, 1))


def test_decode_reply_limits() -> None:
    commitment = b"\x07" * 44
    body = ots.encode_reply(_reply_to(commitment, 5))
    assert ots.decode_reply(body, commitment) == _reply_to(commitment, 5)
    with pytest.raises(OtsDecodeError, match="calendar reply ends inside"):
        ots.decode_reply(body[:-1], commitment)
    with pytest.raises(OtsDecodeError, match="trailing garbage"):
        ots.decode_reply(body + b"\x00", commitment)
    with pytest.raises(OtsDecodeError, match="more than 10000"):
        ots.decode_reply(b"\xf0\x01\x01" * 3334 + PENDING_LEAF, commitment)
    with pytest.raises(OtsDecodeError, match="calendar reply ends"):
        ots.decode_reply(MAGIC, commitment)  # a whole file is not a reply


def test_make_batch_rebuilds_the_real_clients_merkle_batch() -> None:
    """merkle1..3.txt were stamped together by `ots stamp`: with their nonces, make_batch
    gives the very paths of the real proofs, and the calendars' subtree completes each."""
    proofs = [ots.decode(_vector(f"{CLIENT}/merkle{n}.txt.ots")) for n in (1, 2, 3)]
    nonces = iter([proof.timestamp.ops[0][0].arg for proof in proofs])
    batch = make_batch([proof.digest for proof in proofs], nonce=lambda size: next(nonces))
    node = proofs[0].timestamp
    while node.message != batch.root:
        node = node.ops[0][1]
    for leaf, proof, n in zip(batch.leaves, proofs, (1, 2, 3), strict=True):
        assert leaf.proof(node) == proof
        assert ots.encode(leaf.proof(node)) == _vector(f"{CLIENT}/merkle{n}.txt.ots")


def test_make_batch_of_one_and_of_many() -> None:
    one = make_batch([bytes(32)], nonce=lambda size: b"\x01" * size)
    assert [op.name for op in one.leaves[0].ops] == ["append", "sha256"]
    assert one.root == hashlib.sha256(bytes(32) + b"\x01" * 16).digest()
    digests = [hashlib.sha256(bytes([n])).digest() for n in range(7)]
    batch = make_batch(digests)
    calendar = Timestamp(batch.root, (Pending(ALICE),))
    for leaf, digest in zip(batch.leaves, digests, strict=True):
        proof = leaf.proof(calendar)
        assert proof.digest == digest and ots.pending_leaves(proof.timestamp) == [
            (ALICE, batch.root)
        ]
        assert ots.decode(ots.encode(proof)) == proof
    assert len({leaf.ops[0].arg for leaf in batch.leaves}) == 7  # a fresh nonce per file
    with pytest.raises(ValueError, match="32 bytes"):
        make_batch([bytes(20)])
    sha1 = make_batch([bytes(20)], algorithm="sha1")
    assert sha1.leaves[0].proof(Timestamp(sha1.root, (bitcoin(1),))).algorithm == "sha1"


# --- hypothesis ------------------------------------------------------------------------------

_OPS = st.one_of(
    st.sampled_from([Op(SHA1), Op(RIPEMD160), Op(SHA256), Op(KECCAK256), Op(REVERSE), Op(HEXLIFY)]),
    st.binary(min_size=1, max_size=24).map(append),
    st.binary(min_size=1, max_size=24).map(prepend),
)
_ATTESTATIONS = st.one_of(
    st.from_regex(r"[A-Za-z0-9._/:-]{1,40}", fullmatch=True).map(Pending),
    st.integers(0, 2**63 - 1).map(bitcoin),
    st.builds(BlockHeader, st.sampled_from(["litecoin", "ethereum"]), st.integers(0, 10**9)),
    st.builds(
        Unknown,
        st.binary(min_size=8, max_size=8).filter(lambda t: t[0] not in (0x83, 0x05, 0x06, 0x30)),
        st.binary(max_size=40),
    ),
)
_SHAPES = st.recursive(
    st.tuples(st.lists(_ATTESTATIONS, min_size=1, max_size=3), st.just([])),
    lambda children: st.tuples(
        st.lists(_ATTESTATIONS, max_size=2),
        st.lists(st.tuples(_OPS, children), min_size=1, max_size=3),
    ),
    max_leaves=8,
)


def _build(message: bytes, shape: tuple[list[object], list[tuple[Op, object]]]) -> Timestamp:
    attestations, ops = shape
    built = tuple((op, _build(op.apply(message), child)) for op, child in ops)  # type: ignore[arg-type]
    return Timestamp(message, tuple(attestations), built)  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([SHA1, SHA256]), st.binary(min_size=32, max_size=32), _SHAPES)
def test_decode_of_encode_is_the_same_tree(tag: int, seed: bytes, shape: object) -> None:
    proof = OtsProof(Op(tag), _build(seed[: 20 if tag == SHA1 else 32], shape))  # type: ignore[arg-type]
    data = ots.encode(proof)
    assert ots.decode(data) == proof
    assert ots.encode(ots.decode(data)) == data
    reply = ots.encode_reply(proof.timestamp)
    assert ots.decode_reply(reply, proof.digest) == proof.timestamp


def _decodes_or_refuses(data: bytes) -> None:
    """Decoding either succeeds or raises OtsDecodeError: anything else fails the test."""
    with contextlib.suppress(OtsDecodeError):
        ots.decode(data)
    with contextlib.suppress(OtsDecodeError):
        ots.decode_reply(data[len(MAGIC) :], bytes(32))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_raises_only_decode_errors(data: bytes) -> None:
    _decodes_or_refuses(MAGIC + b"\x01\x08" + data)
    _decodes_or_refuses(data)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["hello-world.txt.ots", "different-blockchains.txt.ots", "sha1/a-or-b.ots"]),
    st.data(),
)
def test_mutated_real_proofs_raise_only_decode_errors(name: str, data: st.DataObject) -> None:
    original = bytearray(_vector(f"{CLIENT}/{name}"))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(len(MAGIC), len(original) - 1))
        action = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "flip":
            original[at] = data.draw(st.integers(0, 255))
        elif action == "insert":
            original[at:at] = data.draw(st.binary(min_size=1, max_size=4))
        else:
            del original[at : at + data.draw(st.integers(1, 4))]
    _decodes_or_refuses(bytes(original))
