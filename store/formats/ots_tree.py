"""The timestamp tree of an ``.ots`` proof: nodes, their (canonical) bytes, leaves and merging.

reference/opentimestamps.md §1.3: a node has a message (never serialised: computed from its
parent) and a set of entries, each an attestation (``00`` + attestation) or an op and the
child node whose message is ``op(parent message)``; all entries but the last are preceded
by ``ff``::

    node  := ( ff entry )* entry
    entry := 00 attestation | op-tag [varbytes] node

A :class:`Timestamp` keeps its entries as a set: attestations de-duplicated and ops merged
(two entries with the same op become one child holding both subtrees), both held in the
canonical order of §1.5 — attestations first, sorted by tag then URI / height / payload, then
ops by (tag, argument). Two trees are equal when they hold the same facts, whatever order a
writer used, and :func:`encode_tree` always writes canonical bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from stampd.store.formats.ots_attestations import (
    Attestation,
    BlockHeader,
    Pending,
    encode_attestation,
    read_attestation,
)
from stampd.store.formats.ots_ops import Op, apply_at, read_op
from stampd.store.formats.ots_wire import MAX_DEPTH, OtsDecodeError, Reader

_ATTESTATION = 0x00
_FORK = 0xFF


@dataclass(frozen=True, eq=False)
class Timestamp:
    """One node: its message, what attests to it, and the ops leading to its children.

    Built in code, each child's message must be its op applied to this message (ValueError
    otherwise); entries are normalised into canonical order and duplicates merged.
    """

    message: bytes
    attestations: tuple[Attestation, ...] = ()
    ops: tuple[tuple[Op, Timestamp], ...] = field(default=())

    def __post_init__(self) -> None:
        attestations = tuple(
            sorted(set(self.attestations), key=lambda attestation: attestation.sort_key())
        )
        children: dict[Op, Timestamp] = {}
        for op, child in self.ops:
            if child.message != op.apply(self.message):
                raise ValueError(f"child message under {op.name} is not {op.name}(message)")
            if child.empty:
                raise ValueError(f"the node under {op.name} has no attestation and no op")
            known = children.get(op)
            children[op] = child if known is None else _union(known, child)
        object.__setattr__(self, "attestations", attestations)
        object.__setattr__(self, "ops", tuple(sorted(children.items(), key=lambda item: item[0])))

    @property
    def empty(self) -> bool:
        """Whether the node has no entry at all (only a root may, and it cannot be written)."""
        return not self.attestations and not self.ops

    def nodes(self) -> Iterator[Timestamp]:
        """This node and every node below it, depth first in canonical order."""
        stack: list[Timestamp] = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(child for _, child in reversed(node.ops))

    def leaves(self) -> Iterator[tuple[Timestamp, Attestation]]:
        """Every attestation with the node it attests, in canonical order."""
        for node in self.nodes():
            for attestation in node.attestations:
                yield node, attestation

    def __eq__(self, other: object) -> bool:
        # Iterative: a tree may be 256 levels deep, too deep for a recursive comparison.
        if not isinstance(other, Timestamp):
            return NotImplemented
        pairs = [(self, other)]
        while pairs:
            left, right = pairs.pop()
            if (
                left.message != right.message
                or left.attestations != right.attestations
                or len(left.ops) != len(right.ops)
            ):
                return False
            for (op_left, child_left), (op_right, child_right) in zip(
                left.ops, right.ops, strict=True
            ):
                if op_left != op_right:
                    return False
                pairs.append((child_left, child_right))
        return True

    def __hash__(self) -> int:
        return hash((self.message, self.attestations, tuple(op for op, _ in self.ops)))


def _union(left: Timestamp, right: Timestamp) -> Timestamp:
    """Both nodes' entries under one node (same message); the constructor merges recursively."""
    return Timestamp(left.message, left.attestations + right.attestations, left.ops + right.ops)


def chain(message: bytes, ops: Sequence[Op], tip: Timestamp) -> Timestamp:
    """The path from ``message`` through ``ops`` ending in ``tip`` (ValueError if it does not
    end at ``tip.message``)."""
    messages = [message]
    for op in ops:
        messages.append(op.apply(messages[-1]))
    if messages[-1] != tip.message:
        raise ValueError("the ops do not lead to the tip's message")
    node = tip
    for op, at in zip(reversed(ops), reversed(messages[:-1]), strict=True):
        node = Timestamp(at, ops=((op, node),))
    return node


def pending_leaves(tree: Timestamp) -> list[tuple[str, bytes]]:
    """Every (calendar URI, commitment) to ask for an upgrade: each Pending leaf's message."""
    return [
        (attestation.uri, node.message)
        for node, attestation in tree.leaves()
        if isinstance(attestation, Pending)
    ]


def bitcoin_leaves(tree: Timestamp) -> list[tuple[int, bytes]]:
    """Every (block height, merkle root as the message holds it: internal byte order)."""
    return [
        (attestation.height, node.message)
        for node, attestation in tree.leaves()
        if isinstance(attestation, BlockHeader) and attestation.chain == "bitcoin"
    ]


class OtsMergeError(ValueError):
    """A calendar reply that may not be merged where it was offered."""


def merge(tree: Timestamp, at_commitment: bytes, reply: Timestamp) -> Timestamp:
    """``tree`` with ``reply`` added at every node whose message is ``at_commitment``.

    The reply must be rooted at the commitment that was asked (reference §2: merge only at
    the leaf whose commitment was requested); nothing is removed, so the old leaves stay
    (an upgrade only adds, DESIGN rule 6). OtsMergeError when the reply's root is another
    message or no node of ``tree`` has that message.
    """
    if reply.message != at_commitment:
        raise OtsMergeError(
            f"the reply is rooted at {reply.message.hex()}, not at the commitment"
            f" {at_commitment.hex()} that was asked"
        )
    merged, found = _merge_at(tree, at_commitment, reply)
    if not found:
        raise OtsMergeError(f"no node of the proof has the commitment {at_commitment.hex()}")
    return merged


def _merge_at(node: Timestamp, commitment: bytes, reply: Timestamp) -> tuple[Timestamp, bool]:
    found = False
    ops = []
    for op, child in node.ops:
        new_child, below = _merge_at(child, commitment, reply)
        found = found or below
        ops.append((op, new_child))
    if node.message == commitment:
        return _union(Timestamp(node.message, node.attestations, tuple(ops)), reply), True
    if not found:
        return node, False
    return Timestamp(node.message, node.attestations, tuple(ops)), True


def encode_tree(tree: Timestamp) -> bytes:
    """The node's entries in canonical order (§1.5); ValueError for an empty node or a tree
    deeper than the decoder accepts."""
    out = bytearray()
    _write(tree, out, 0)
    return bytes(out)


def _write(node: Timestamp, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"the tree is deeper than {MAX_DEPTH} ops: no reader would accept it")
    if node.empty:
        raise ValueError("a node with no attestation and no op cannot be written")
    last = len(node.attestations) + len(node.ops) - 1
    index = 0
    for attestation in node.attestations:
        if index < last:
            out.append(_FORK)
        out.append(_ATTESTATION)
        out += encode_attestation(attestation)
        index += 1
    for op, child in node.ops:
        if index < last:
            out.append(_FORK)
        out += op.encode()
        _write(child, out, depth + 1)
        index += 1


def read_tree(reader: Reader, message: bytes) -> Timestamp:
    """The node rooted at ``message`` from ``reader``, every op evaluated as it is read."""
    return _read(reader, message, 0)


def _read(reader: Reader, message: bytes, depth: int) -> Timestamp:
    if depth > MAX_DEPTH:
        raise OtsDecodeError(
            f"the tree is nested deeper than {MAX_DEPTH} ops", offset=reader.offset
        )
    attestations: list[Attestation] = []
    ops: list[tuple[Op, Timestamp]] = []
    more = True
    while more:
        at = reader.offset
        tag = reader.byte("timestamp entry")
        if tag == _FORK:
            at = reader.offset
            tag = reader.byte("timestamp entry after a fork")
        else:
            more = False
        if tag == _ATTESTATION:
            attestations.append(read_attestation(reader))
            continue
        op = read_op(reader, tag)
        result = apply_at(op, message, at)
        ops.append((op, _read(reader, result, depth + 1)))
    return Timestamp(message, tuple(attestations), tuple(ops))
