"""`stampd verify` and `.ots` proofs: the real vectors reach what vectors/ots/README.md says.

Without a configuration (`--ots FILE PATH`, STAMPD_CONFIG pointing nowhere) a complete proof
is "not checked against Bitcoin" with its height and merkle root, and exits 1 like
`ots --no-bitcoin verify`. With `[anchor.bitcoin]` naming a node, each Bitcoin leaf is checked
against the header at its height: the node is tests/fake_bitcoind.py over loopback, whose
chain holds, at the vector's height, a header with the merkle root the README's table gives
(tests have no mainnet headers). The vectors are read in place (tests/conftest.py).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from stampd.daemon.cli.app import cli
from tests.conftest import shared_vector_names, shared_vectors
from tests.fake_bitcoind import FakeBitcoind

#: (height, merkle root in display order) of the complete proofs, from the vectors' README.
HELLO = (358391, "8a1b66ecb7cbd07d8139a7e7d7f2c41aab1f5009b8364aaf61d03ad245e47e00")
BAD_STAMP_ROOT = "1bb49db87782170860c2e467994762f7f00c815d80d712e7eb9a7c14b9811f92"
A_OR_B = (466906, "40c9303a5cb0a8c4b2676f4c6b101d37f83e9413f3856f356849bfb9438a7c26")
#: The time the fake header at 358391 carries (the real block is from that day).
BLOCK_TIME = 1432827678
BLOCK_ISO = "2015-05-28T15:41:18Z"


def _vector(name: str) -> Path:
    return shared_vectors("ots") / "opentimestamps-client" / name


def _invoke(tmp_path: Path, *args: str, config: Path | None = None) -> Result:
    where = config if config is not None else tmp_path / "no-such-config.toml"
    return CliRunner(env={"STAMPD_CONFIG": str(where)}).invoke(cli, ["verify", *args])


def _given(tmp_path: Path, proof: str, target: str, *extra: str, **kw: Any) -> Result:
    return _invoke(tmp_path, *extra, "--ots", str(_vector(proof)), str(_vector(target)), **kw)


def _evidence(result: Result) -> dict[str, Any]:
    document = json.loads(result.stdout)
    (evidence,) = document["files"][0]["evidence"]
    assert isinstance(evidence, dict)
    return evidence


@pytest.fixture
def node_at() -> Iterator[Callable[[int, str], FakeBitcoind]]:
    """A fake node whose header at `height` has the merkle root `root` (display order)."""
    nodes: list[FakeBitcoind] = []

    def start(height: int, root: str) -> FakeBitcoind:
        node = FakeBitcoind(start_height=height - 1, credentials=("stampd", "hunter2"))
        assert node.add_block(bytes.fromhex(root)[::-1], BLOCK_TIME) == height
        nodes.append(node.start())
        return node

    yield start
    for node in nodes:
        node.stop()


def _config_for(make_config: Callable[..., Path], tmp_path: Path, node: FakeBitcoind) -> Path:
    """A configuration whose [anchor.bitcoin] is `node`, the password in a secret file."""
    secret = tmp_path / "rpc-password"
    secret.write_text("hunter2\n")
    secret.chmod(0o600)
    return make_config(
        f'[anchor.bitcoin]\nurl = "{node.url}"\nusername = "stampd"\nsecret_file = "{secret}"\n'
    )


# -- against a header source -------------------------------------------------------------


def test_hello_world_is_valid_against_the_header_at_its_height(
    make_config: Callable[..., Path], tmp_path: Path, node_at: Callable[[int, str], FakeBitcoind]
) -> None:
    config = _config_for(make_config, tmp_path, node_at(*HELLO))
    result = _given(tmp_path, "hello-world.txt.ots", "hello-world.txt", config=config)
    assert result.exit_code == 0, result.output
    assert (
        f"hello-world.txt: ots valid: existed no later than {BLOCK_ISO}: Bitcoin block"
        f" {HELLO[0]} has the proof's merkle root {HELLO[1]}" in result.stdout
    )
    as_json = _given(tmp_path, "hello-world.txt.ots", "hello-world.txt", "--json", config=config)
    assert as_json.exit_code == 0, as_json.output
    evidence = _evidence(as_json)
    assert evidence["status"] == "valid"
    assert evidence["gen_time"] == BLOCK_ISO
    assert evidence["authority"] == f"Bitcoin block {HELLO[0]}"
    assert evidence["digest_matches"] is True
    assert evidence["bitcoin"] == [
        {"height": HELLO[0], "merkle_root": HELLO[1], "header": "ok", "block_time": BLOCK_ISO}
    ]
    assert json.loads(as_json.stdout)["proven"] is True


def test_bad_stamp_is_invalid_against_the_same_header(
    make_config: Callable[..., Path], tmp_path: Path, node_at: Callable[[int, str], FakeBitcoind]
) -> None:
    config = _config_for(make_config, tmp_path, node_at(*HELLO))
    result = _given(tmp_path, "bad-stamp.txt.ots", "bad-stamp.txt", config=config)
    assert result.exit_code == 1, result.output
    assert "bad-stamp.txt: ots invalid: merkle_root_mismatch:" in result.stdout
    assert f"Bitcoin block {HELLO[0]} has merkle root {HELLO[1]}" in result.stdout
    assert f"the proof's is {BAD_STAMP_ROOT}" in result.stdout


@pytest.mark.parametrize("target", ["sha1/a", "sha1/b"])
def test_both_files_of_the_sha1_collision_verify_against_the_sha1_proof(
    make_config: Callable[..., Path],
    tmp_path: Path,
    node_at: Callable[[int, str], FakeBitcoind],
    target: str,
) -> None:
    # The SHAttered pair has one sha1: the proof is for both, as upstream's README says.
    config = _config_for(make_config, tmp_path, node_at(*A_OR_B))
    result = _given(tmp_path, "sha1/a-or-b.ots", target, "--json", config=config)
    assert result.exit_code == 0, result.output
    evidence = _evidence(result)
    assert (evidence["status"], evidence["algorithm"]) == ("valid", "sha1")
    assert evidence["authority"] == f"Bitcoin block {A_OR_B[0]}"
    # Its three calendar forks never completed: listed, and a valid proof all the same.
    assert len(evidence["pending"]) == 3
    text = _given(tmp_path, "sha1/a-or-b.ots", target, config=config)
    assert "(3 forks still pending)" in text.stdout


def test_the_sidecar_next_to_the_file_is_found_and_checked(
    make_config: Callable[..., Path], tmp_path: Path, node_at: Callable[[int, str], FakeBitcoind]
) -> None:
    config = _config_for(make_config, tmp_path, node_at(*HELLO))
    data = tmp_path / "watched" / "hello-world.txt"
    shutil.copyfile(_vector("hello-world.txt"), data)
    shutil.copyfile(_vector("hello-world.txt.ots"), data.with_name("hello-world.txt.ots"))
    result = _invoke(tmp_path, str(data), config=config)
    assert result.exit_code == 0, result.output
    assert f"hello-world.txt: ots valid: existed no later than {BLOCK_ISO}" in result.stdout


def test_a_node_that_fails_leaves_the_proof_unverifiable_with_its_leaves_listed(
    make_config: Callable[..., Path], tmp_path: Path, node_at: Callable[[int, str], FakeBitcoind]
) -> None:
    node = node_at(*HELLO)
    config = _config_for(make_config, tmp_path, node)
    node.mode = "dead"
    result = _given(tmp_path, "hello-world.txt.ots", "hello-world.txt", "--json", config=config)
    assert result.exit_code == 1, result.output
    evidence = _evidence(result)
    assert (evidence["status"], evidence["reason"]) == ("unverifiable", "network")
    assert f"the header source failed: cannot reach bitcoind at {node.url}" in evidence["message"]
    assert f"block {HELLO[0]} has merkle root {HELLO[1]}" in evidence["message"]


# -- without a header source -------------------------------------------------------------


@pytest.mark.parametrize(
    ("proof", "target", "height", "root"),
    [
        ("hello-world.txt.ots", "hello-world.txt", *HELLO),
        ("bad-stamp.txt.ots", "bad-stamp.txt", HELLO[0], BAD_STAMP_ROOT),
        (
            "empty.ots",
            "empty",
            129405,
            "db29fdc2c27a1531ae08a9dff2d9e4dfedd9c902d16de542d8666a27367e5b71",
        ),
        ("sha1/a-or-b.ots", "sha1/a", *A_OR_B),
    ],
)
def test_without_a_configuration_the_leaf_is_listed_and_not_proven(
    tmp_path: Path, proof: str, target: str, height: int, root: str
) -> None:
    result = _given(tmp_path, proof, target)
    assert result.exit_code == 1, result.output
    assert "ots unverifiable: not_checked: not checked against Bitcoin" in result.stdout
    assert f"block {height} has merkle root {root}" in result.stdout
    evidence = _evidence(_given(tmp_path, proof, target, "--json"))
    assert evidence["bitcoin"] == [
        {"height": height, "merkle_root": root, "header": "not_checked", "block_time": None}
    ]
    assert evidence["digest_matches"] is True


@pytest.mark.parametrize(
    ("proof", "calendars"),
    [
        ("incomplete.txt.ots", ["https://alice.btc.calendar.opentimestamps.org"]),
        (
            "two-calendars.txt.ots",
            [
                "https://alice.btc.calendar.opentimestamps.org",
                "https://bob.btc.calendar.opentimestamps.org",
            ],
        ),
    ],
)
def test_pending_proofs_name_their_calendars_and_are_not_proven(
    tmp_path: Path, proof: str, calendars: list[str]
) -> None:
    target = proof.removesuffix(".ots")
    result = _given(tmp_path, proof, target)
    assert result.exit_code == 1, result.output
    assert f"{target}: ots pending: pending: not in Bitcoin yet: pending at" in result.stdout
    evidence = _evidence(_given(tmp_path, proof, target, "--json"))
    assert (evidence["status"], evidence["pending"]) == ("pending", calendars)


def test_unknown_attestations_are_reported_not_trusted(tmp_path: Path) -> None:
    alone = _given(tmp_path, "unknown-notary.txt.ots", "unknown-notary.txt")
    assert alone.exit_code == 1, alone.output
    assert (
        "ots unverifiable: no_bitcoin_attestation: no Bitcoin attestation, only unknown"
        " attestation 0102030405060708" in alone.stdout
    )
    mixed = _evidence(
        _given(
            tmp_path, "known-and-unknown-notary.txt.ots", "known-and-unknown-notary.txt", "--json"
        )
    )
    assert mixed["status"] == "pending"
    assert mixed["other"] == ["unknown attestation 0102030405060708"]
    assert mixed["pending"] == ["https://bob.btc.calendar.opentimestamps.org"]


# -- refused proofs ----------------------------------------------------------------------

_INVALID = {
    "bad-major-version.ots": "major version 1151",
    "exceeds-max-msg-length.ots": "4112 bytes, more than 4096",
    "invalid-file-digest-type.ots": "0xf3 is not a hash",
}


@pytest.mark.parametrize("name", shared_vector_names("ots", "opentimestamps-client/invalid/*.ots"))
def test_invalid_vectors_are_refused_with_the_reason(tmp_path: Path, name: str) -> None:
    result = _given(tmp_path, f"invalid/{name}", "hello-world.txt")
    assert result.exit_code == 1, result.output
    assert "hello-world.txt: ots invalid: parse: invalid OpenTimestamps proof:" in result.stdout
    assert _INVALID[name] in result.stdout


def test_a_sha1_proof_for_another_file_says_whose_digest_it_holds(tmp_path: Path) -> None:
    # bitcoin.pdf.ots ships without its target: any other file is another file's proof.
    result = _given(tmp_path, "bitcoin.pdf.ots", "hello-world.txt")
    assert result.exit_code == 1, result.output
    assert (
        "ots invalid: digest_mismatch: the proof is for sha1"
        " 8de2fdb04edce612738eb51e14ecc426381f8ed8" in result.stdout
    )
    missing = _invoke(
        tmp_path, "--json", "--ots", str(_vector("bitcoin.pdf.ots")), str(tmp_path / "bitcoin.pdf")
    )
    assert missing.exit_code == 1, missing.output
    (entry,) = json.loads(missing.stdout)["files"]
    assert entry["proven"] is False
    assert "No such file or directory" in entry["error"]


def _oversized(tmp_path: Path) -> Path:
    # A real proof's bytes, padded past the cap: without the cap the codec would read it and
    # fail on the trailing bytes, with a decode message instead of the cap's.
    big = tmp_path / "big.ots"
    big.write_bytes(_vector("hello-world.txt.ots").read_bytes().ljust(1024 * 1024 + 1, b"\x00"))
    return big


def test_a_proof_over_the_size_cap_is_refused_before_decoding(tmp_path: Path) -> None:
    result = _invoke(tmp_path, "--ots", str(_oversized(tmp_path)), str(_vector("hello-world.txt")))
    assert result.exit_code == 1, result.output
    assert (
        "ots invalid: parse: the proof is 1,048,577 bytes, more than the 1,048,576 bytes"
        in result.stdout
    )


def test_an_oversized_sidecar_is_refused_too(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = make_config()
    data = tmp_path / "watched" / "hello-world.txt"
    shutil.copyfile(_vector("hello-world.txt"), data)
    _oversized(tmp_path).rename(data.with_name("hello-world.txt.ots"))
    result = _invoke(tmp_path, "--json", str(data), config=config)
    assert result.exit_code == 1, result.output
    evidence = _evidence(result)
    assert (evidence["status"], evidence["reason"]) == ("invalid", "parse")
    assert "more than the 1,048,576 bytes stampd decodes" in evidence["message"]


def test_ots_takes_exactly_one_path(tmp_path: Path) -> None:
    result = _invoke(
        tmp_path,
        "--ots",
        str(_vector("hello-world.txt.ots")),
        str(_vector("hello-world.txt")),
        str(_vector("empty")),
    )
    assert result.exit_code == 2
    assert "exactly one PATH" in result.output
