"""The bitcoind header source against the fake node over loopback (reference §5)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from stampd.daemon.evidence.bitcoind import MAX_REPLY_BYTES, BitcoindError, BitcoindHeaders
from stampd.store.errors import ErrorClass, StampdError
from tests.fake_bitcoind import FakeBitcoind


@pytest.fixture
def node() -> Iterator[FakeBitcoind]:
    with FakeBitcoind(credentials=("stampd", "hunter2")) as peer:
        yield peer


@pytest.fixture
def headers(node: FakeBitcoind) -> Iterator[BitcoindHeaders]:
    with BitcoindHeaders(node.url, username="stampd", password="hunter2", timeout=5) as source:
        yield source


def failure(source: BitcoindHeaders, height: int) -> BitcoindError:
    with pytest.raises(BitcoindError) as caught:
        source(height)
    error = caught.value
    assert isinstance(error, StampdError)
    assert "hunter2" not in str(error)
    return error


def test_header_at_a_height_is_the_nodes_80_bytes(
    node: FakeBitcoind, headers: BitcoindHeaders
) -> None:
    root = bytes(range(32))
    height = node.add_block(root, 1_800_000_000)
    header = headers(height)
    assert header == node.header(height).serialize()
    assert header is not None and header[36:68] == root
    assert headers(900000) == node.header(900000).serialize()
    assert node.calls == ["getblockhash", "getblockheader"] * 2


def test_a_height_the_node_does_not_have_is_none(
    node: FakeBitcoind, headers: BitcoindHeaders
) -> None:
    assert headers(node.height + 1) is None
    assert headers(899999) is None
    assert headers(-1) is None
    assert node.calls == ["getblockhash", "getblockhash"]


def test_cookie_is_read_at_each_call_so_a_restarted_node_still_works(tmp_path: Path) -> None:
    with FakeBitcoind(cookie_dir=tmp_path) as node:
        source = BitcoindHeaders(node.url, cookie_file=node.cookie_file)
        assert source(900000) is not None
        node.restart()
        assert source(900000) is not None
        source.close()


def test_missing_cookie_file_is_an_auth_error_naming_it(tmp_path: Path) -> None:
    with FakeBitcoind(cookie_dir=tmp_path) as node:
        missing = tmp_path / "gone" / ".cookie"
        source = BitcoindHeaders(node.url, cookie_file=missing)
        error = failure(source, 900000)
        assert error.error_class == ErrorClass.AUTH
        assert str(missing) in error.message and node.url in error.message
        assert error.hint is not None and "readable by the stampd user" in error.hint
        assert node.requests == 0
        (tmp_path / "bad").write_text("no colon here")
        error = failure(BitcoindHeaders(node.url, cookie_file=tmp_path / "bad"), 900000)
        assert error.error_class == ErrorClass.AUTH and "__cookie__" in error.message


def test_wrong_credentials_are_auth(node: FakeBitcoind) -> None:
    source = BitcoindHeaders(node.url, username="stampd", password="wrong")
    error = failure(source, 900000)
    assert (error.error_class, error.http_status) == (ErrorClass.AUTH, 401)
    assert error.hint is not None and "secret_file" in error.hint


def test_stale_cookie_is_auth(tmp_path: Path) -> None:
    with FakeBitcoind(cookie_dir=tmp_path) as node:
        stale = tmp_path / "old.cookie"
        stale.write_text("__cookie__:" + "0" * 64)
        error = failure(BitcoindHeaders(node.url, cookie_file=stale), 900000)
        assert error.error_class == ErrorClass.AUTH and str(stale) in (error.hint or "")


def test_header_that_does_not_hash_to_the_named_block_is_refused(
    node: FakeBitcoind, headers: BitcoindHeaders
) -> None:
    node.mode = "wrong_header"
    error = failure(headers, 900000)
    assert error.error_class == ErrorClass.VERIFY
    assert node.header(900000).hash in error.message


def test_short_header_is_a_parse_error(node: FakeBitcoind, headers: BitcoindHeaders) -> None:
    node.mode = "short_header"
    assert failure(headers, 900000).error_class == ErrorClass.PARSE


def test_oversized_reply_is_capped(node: FakeBitcoind, headers: BitcoindHeaders) -> None:
    node.mode = "oversized"
    error = failure(headers, 900000)
    assert error.error_class == ErrorClass.PARSE and str(MAX_REPLY_BYTES) in error.message


def test_garbage_is_a_parse_error(node: FakeBitcoind, headers: BitcoindHeaders) -> None:
    node.mode = "garbage"
    assert failure(headers, 900000).error_class == ErrorClass.PARSE


def test_non_json_error_page_is_http_status(node: FakeBitcoind, headers: BitcoindHeaders) -> None:
    node.mode = "status_503"
    error = failure(headers, 900000)
    assert (error.error_class, error.http_status) == (ErrorClass.HTTP_STATUS, 503)
    assert error.hint is not None and "server=1" in error.hint


def test_node_still_starting_is_rejected_with_its_message(
    node: FakeBitcoind, headers: BitcoindHeaders
) -> None:
    node.mode = "warmup"
    error = failure(headers, 900000)
    assert (error.error_class, error.http_status) == (ErrorClass.REJECTED, 500)
    assert "error -28: Loading block index" in error.message
    assert error.hint == "try again once it has started"


def test_slow_node_is_a_timeout(node: FakeBitcoind) -> None:
    node.mode = "slow"
    node.slow_seconds = 30
    with BitcoindHeaders(node.url, username="stampd", password="hunter2", timeout=0.3) as source:
        error = failure(source, 900000)
    assert error.error_class == ErrorClass.TIMEOUT and node.url in error.message


def test_dead_node_and_closed_port_are_network_errors(
    node: FakeBitcoind, headers: BitcoindHeaders
) -> None:
    node.mode = "dead"
    assert failure(headers, 900000).error_class == ErrorClass.NETWORK
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = BitcoindHeaders(f"http://127.0.0.1:{port}/", username="u", password="p", timeout=2)
    error = failure(closed, 1)
    assert error.error_class == ErrorClass.NETWORK
    assert f"127.0.0.1:{port}" in error.message
    assert error.hint is not None and "server=1" in error.hint


@pytest.mark.parametrize(
    ("url", "kwargs", "words"),
    [
        ("ftp://127.0.0.1/", {"username": "u", "password": "p"}, "not an http"),
        ("http://u:p@127.0.0.1:8332/", {"username": "u", "password": "p"}, "credentials"),
        ("http://127.0.0.1:8332/", {}, "either a cookie file"),
        ("http://127.0.0.1:8332/", {"username": "u"}, "either a cookie file"),
    ],
)
def test_bad_settings_are_config_errors(url: str, kwargs: dict[str, str], words: str) -> None:
    with pytest.raises(BitcoindError) as caught:
        BitcoindHeaders(url, **kwargs)  # type: ignore[arg-type]
    assert caught.value.error_class == ErrorClass.CONFIG
    assert words in caught.value.message and "anchor.bitcoin" in (caught.value.hint or "")
