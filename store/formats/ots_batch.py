"""Many files under one calendar request: nonce-blinded digests and a local merkle tree.

reference/opentimestamps.md §3, the way ``ots stamp`` stamps:

1. per file, ``append <16-byte nonce>`` then ``sha256`` on the file digest: the nonce blinds
   the digest, so calendars and batch siblings learn nothing about the file;
2. a merkle tree over the blinded tips: each pair becomes ``sha256(left ‖ right)``, the left
   one reaching it by ``append right, sha256`` and the right one by ``prepend left, sha256``;
   an odd one out goes up a level unchanged;
3. the root is submitted once to every calendar; each reply (a tree rooted at the root) is
   attached to every file's path with :meth:`BatchLeaf.proof`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stampd.store.formats.ots import OtsProof
from stampd.store.formats.ots_ops import HASH_NAMES, HASH_SIZES, Op, append, prepend, sha256
from stampd.store.formats.ots_tree import Timestamp, chain

#: Bytes of nonce per file (§3: ``os.urandom(16)``).
NONCE_SIZE = 16


@dataclass(frozen=True)
class BatchLeaf:
    """One file of a batch: its digest and the ops from that digest to the batch root."""

    file_op: Op
    digest: bytes
    ops: tuple[Op, ...]

    def proof(self, root: Timestamp) -> OtsProof:
        """The file's proof: its path, then ``root`` (the batch root with the calendars'
        replies merged under it). ValueError if ``root`` is not this batch's root."""
        return OtsProof(self.file_op, chain(self.digest, self.ops, root))


@dataclass(frozen=True)
class Batch:
    """A batch: the message submitted to the calendars, and each file's path to it."""

    root: bytes
    #: In the order the digests were given.
    leaves: tuple[BatchLeaf, ...]


def make_batch(
    digests: Sequence[bytes],
    *,
    algorithm: str = "sha256",
    nonce: Callable[[int], bytes] = os.urandom,
) -> Batch:
    """The batch of ``digests`` (each of ``algorithm``); ``nonce(16)`` gives each file's nonce.

    ValueError for no digests, or a digest of the wrong length.
    """
    tags = {name: tag for tag, name in HASH_NAMES.items()}
    if algorithm not in tags:
        raise ValueError(f"no .ots file hash op for {algorithm!r} (known: {', '.join(tags)})")
    file_op = Op(tags[algorithm])
    if not digests:
        raise ValueError("a batch needs at least one digest")
    paths: list[list[Op]] = []
    tips: list[bytes] = []
    for digest in digests:
        if len(digest) != HASH_SIZES[file_op.tag]:
            raise ValueError(f"a {algorithm} digest is {HASH_SIZES[file_op.tag]} bytes")
        salt = nonce(NONCE_SIZE)
        if len(salt) != NONCE_SIZE:
            raise ValueError(f"a nonce is {NONCE_SIZE} bytes")
        ops = [append(salt), sha256()]
        paths.append(ops)
        tips.append(sha256().apply(append(salt).apply(digest)))
    # Each level: which files sit under each message of the level.
    level = [(tip, [index]) for index, tip in enumerate(tips)]
    while len(level) > 1:
        upper = []
        for pair in range(0, len(level) - 1, 2):
            (left, left_files), (right, right_files) = level[pair], level[pair + 1]
            for index in left_files:
                paths[index] += [append(right), sha256()]
            for index in right_files:
                paths[index] += [prepend(left), sha256()]
            upper.append((sha256().apply(left + right), left_files + right_files))
        if len(level) % 2:
            upper.append(level[-1])
        level = upper
    root = level[0][0]
    leaves = tuple(
        BatchLeaf(file_op, digest, tuple(ops)) for digest, ops in zip(digests, paths, strict=True)
    )
    return Batch(root, leaves)
