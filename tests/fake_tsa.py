"""Local RFC 3161 time-stamping authorities on 127.0.0.1 for tests (reference rfc3161.md §7).

Two peers, both context managers that serve from a background thread on an ephemeral port and
expose `.url`, `.requests` (POSTs received), `.last_query` (its body) and `.last_nonce` (its nonce,
None when absent or unparsable):

- `OpenSslTsa(directory, pki)`: `openssl ts -reply` behind a stdlib HTTP server. Tokens come from
  an implementation stampd does not share, so a token it accepts is not just self-consistent.
- `FakeTsa(pki)`: builds the TimeStampResp itself with asn1crypto + cryptography, because OpenSSL
  cannot be made to produce most of the broken tokens and HTTP failures stampd must classify.
  Set `.mode` (any of `MODES`, changeable while serving) and `.gen_time` (a fixed genTime).

Neither imports stampd: they are an independent check of the product code in store/formats/tsp.py.

Cases that depend on the TSA certificate rather than on the server are a FakeTsa over another
`tests.tsa_pki.make_pki` PKI, with stampd trusting only the first PKI's root.pem:

- EKU not critical:      ``FakeTsa(make_pki(d, tsa_eku_critical=False))``
- EKU with extra purpose: ``FakeTsa(make_pki(d, extra_eku=True))``; no EKU: ``no_eku=True``
- expired TSA cert:      ``FakeTsa(make_pki(d, tsa_not_before=past, tsa_not_after=past2))``;
  with ``.gen_time`` inside that window the token is valid at genTime but expired now.
- untrusted root:        ``FakeTsa(make_pki(d2, "Other"))`` while stampd trusts ``pki.root_pem``
- foreign root embedded: ``FakeTsa(make_pki(d2, pki.name))``: same subject names, other keys,
  its own root in `certificates`.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import math
import secrets
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal, get_args

from asn1crypto import algos, cms, core, tsp, x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from tests.loopback_peer import LoopbackPeer
from tests.tsa_pki import Pki

QUERY_TYPE = "application/timestamp-query"
REPLY_TYPE = "application/timestamp-reply"
DEFAULT_POLICY = "1.3.6.1.4.1.99999.1.1"
OTHER_POLICY = "1.3.6.1.4.1.99999.1.2"
MAX_QUERY = 64 * 1024  # a TimeStampReq is ~100 bytes; refuse anything absurd before reading it
OVERSIZED = 5 * 1024 * 1024
# Imprint lengths the TSAs accept; SHA-1 is refused (CA/B Forum CSBR §6.8, reference §1.1).
DIGEST_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64}

Mode = Literal[
    "ok",
    "hang",
    "status_500",
    "status_503_retry_after",
    "status_429_retry_after",
    "status_429_retry_after_date",
    "status_401",
    "garbage",
    "html",
    "wrong_content_type",
    "oversized",
    "oversized_no_length",
    "reject",
    "granted_no_token",
    "wrong_nonce",
    "wrong_imprint",
    "bad_signature",
    "no_ess",
    "wrong_ess",
    "ess_v1",
    "no_certs",
]
MODES: frozenset[str] = frozenset(get_args(Mode))


class TimeStampResp(core.Sequence):  # type: ignore[misc]  # asn1crypto ships no type hints
    """TimeStampResp with the token OPTIONAL, as in RFC 3161 §2.4.2.

    asn1crypto 1.5.1 declares it mandatory (wbond/asn1crypto#286), which would make rejection
    replies impossible to build or parse.
    """

    _fields = [  # noqa: RUF012 - asn1crypto's class-level schema
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


@dataclass
class _Reply:
    """One HTTP answer: status, Content-Type, body and extra headers."""

    status: int
    content_type: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    sized: bool = True  # False: no Content-Length, the body ends when the connection closes


def _query_nonce(body: bytes) -> int | None:
    """The nonce of a DER TimeStampReq, or None when absent or unparsable (for `.last_nonce`)."""
    try:
        nonce = tsp.TimeStampReq.load(body)["nonce"].native
    except (ValueError, TypeError, KeyError):
        return None
    return nonce if isinstance(nonce, int) else None


class _Handler(BaseHTTPRequestHandler):
    """Reads one POST, lets the owning TSA decide the answer, and writes it.

    HTTP/1.0 (the default): one request per connection, so no idle keep-alive connection can hold
    a worker thread and delay shutdown.
    """

    server: _Server

    def do_POST(self) -> None:
        owner = self.server.owner
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send(_Reply(411, "text/plain", b"Content-Length required\n"))
            return
        if length > MAX_QUERY:
            self._send(_Reply(413, "text/plain", b"query too large\n"))
            return
        body = self.rfile.read(length)
        owner._record(body, self.headers.get("Authorization"))
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != QUERY_TYPE:
            self._send(_Reply(415, "text/plain", b"expected application/timestamp-query\n"))
            return
        reply = owner._answer(body)
        if reply is not None:
            self._send(reply)

    def do_GET(self) -> None:
        self._send(_Reply(405, "text/plain", b"POST a TimeStampReq\n", {"Allow": "POST"}))

    def _send(self, reply: _Reply) -> None:
        """Write the reply; a client that gave up (timeout, size limit) is not an error here."""
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            if reply.sized:
                self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Connection", "close")
            self.end_headers()
            view = memoryview(reply.body)
            for start in range(0, len(view), 65536):
                self.wfile.write(view[start : start + 65536])
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        """Silence the per-request stderr line; `.requests` is what tests look at."""


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its TSA and joins its worker threads on close."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, owner: _LocalTsa) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)


class _LocalTsa(LoopbackPeer):
    """Lifecycle shared by both TSAs: serve in a thread, count requests, stop promptly."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        super().__init__()
        self.requests = 0
        self.last_nonce: int | None = None
        self.last_query: bytes | None = None
        #: The Authorization header of each request (None when absent), in order.
        self.authorizations: list[str | None] = []

    @property
    def url(self) -> str:
        """The endpoint to POST TimeStampReqs to (any path is accepted)."""
        return f"http://127.0.0.1:{self.port}/tsa"

    def _make_server(self) -> _Server:
        return _Server(self)

    def _record(self, body: bytes, authorization: str | None = None) -> None:
        nonce = _query_nonce(body)
        with self._lock:
            self.requests += 1
            self.authorizations.append(authorization)
            self.last_query = body
            self.last_nonce = nonce

    def _answer(self, body: bytes) -> _Reply | None:
        raise NotImplementedError


class OpenSslTsa(_LocalTsa):
    """`openssl ts -reply` behind HTTP, configured as the reference §7 `tsa.cnf`.

    The TSA certificate must have a critical timeStamping EKU: `ts -reply` refuses others
    ("invalid signer certificate purpose"); use FakeTsa for those PKIs.
    """

    def __init__(
        self,
        directory: Path,
        pki: Pki,
        *,
        openssl: str = "openssl",
        ess_cert_id_alg: str = "sha256",
    ) -> None:
        super().__init__()
        self.directory = directory
        self.pki = pki
        self.openssl = openssl
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "tsa.cnf"
        self.serial_file = directory / "tsaserial"
        self.serial_file.write_text("01\n")
        # Every key is listed: a missing one makes `ts -reply` print NCONF_get_string errors.
        self.config.write_text(
            "[ tsa ]\n"
            "default_tsa = tsa_a\n"
            "[ tsa_a ]\n"
            f"dir = {directory}\n"
            "serial = $dir/tsaserial\n"
            "crypto_device = builtin\n"
            f"signer_cert = {pki.tsa_pem}\n"
            f"signer_key = {pki.tsa_key_pem}\n"
            f"certs = {pki.root_pem}\n"
            "signer_digest = sha256\n"
            f"default_policy = {DEFAULT_POLICY}\n"
            f"other_policies = {OTHER_POLICY}\n"
            "digests = sha256, sha384, sha512\n"
            "accuracy = secs:1\n"
            "ordering = no\n"
            "tsa_name = yes\n"
            "ess_cert_id_chain = no\n"
            f"ess_cert_id_alg = {ess_cert_id_alg}\n"
        )
        self._openssl_lock = threading.Lock()

    def _answer(self, body: bytes) -> _Reply | None:
        # One `openssl ts -reply` at a time: they read and rewrite the same serial file.
        with (
            self._openssl_lock,
            tempfile.TemporaryDirectory(dir=self.directory) as work,
        ):
            query = Path(work) / "q.tsq"
            reply = Path(work) / "r.tsr"
            query.write_bytes(body)
            done = subprocess.run(
                [
                    self.openssl,
                    "ts",
                    "-reply",
                    "-config",
                    str(self.config),
                    "-queryfile",
                    str(query),
                    "-out",
                    str(reply),
                ],
                capture_output=True,
                timeout=30,
                check=False,
            )
            if done.returncode != 0 or not reply.exists():
                return _Reply(500, "text/plain", done.stderr or b"openssl ts -reply failed\n")
            return _Reply(200, REPLY_TYPE, reply.read_bytes())


def _flip_last_bit(data: bytes) -> bytes:
    """Same length, one bit different: still well-formed DER where it sits, but wrong."""
    return data[:-1] + bytes([data[-1] ^ 0x01])


def _cms_time(when: dt.datetime) -> cms.Time:
    """UTCTime through 2049, GeneralizedTime after, as RFC 5280 §4.1.2.5 requires."""
    if 1950 <= when.year < 2050:
        return cms.Time({"utc_time": when})
    return cms.Time({"general_time": when})


class FakeTsa(_LocalTsa):
    """A TSA in pure Python that can misbehave on demand through `.mode` (see `MODES`).

    In "ok" it answers like `openssl ts -reply` with the §7 config: TSTInfo v1 with policy,
    the request's imprint and nonce, a serial over 128 bits, genTime to the millisecond, accuracy
    1 s and the TSA name; one SignerInfo (issuerAndSerialNumber, SHA-256) whose signed
    attributes are contentType, messageDigest, signingTime and signingCertificateV2; the TSA
    certificate and root embedded when certReq is set. Requests that a real TSA refuses are
    refused with a rejection: unknown hash or wrong digest length (badAlg), unknown reqPolicy
    (unacceptedPolicy), extensions (unacceptedExtension), unparsable query (badDataFormat).
    """

    def __init__(
        self,
        pki: Pki,
        *,
        mode: Mode = "ok",
        gen_time: dt.datetime | None = None,
        policy: str = DEFAULT_POLICY,
        retry_after: int = 2,
        hang_seconds: float = 60.0,
    ) -> None:
        super().__init__()
        self.pki = pki
        self.mode = mode
        self.gen_time = gen_time
        self.policy = policy
        self.retry_after = retry_after
        self.hang_seconds = hang_seconds
        self._serial = secrets.randbits(128) | (1 << 128)

    @property
    def mode(self) -> str:
        """How the next request is answered; one of `MODES`."""
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"unknown FakeTsa mode {value!r}")
        self._mode = value  # a single reference store: atomic for the handler threads

    def _answer(self, body: bytes) -> _Reply | None:
        mode = self.mode
        if mode == "hang":
            # No answer while the mode stays "hang" (at most hang_seconds): a test ends the
            # hang of a request in progress by changing the mode; the connection then closes.
            deadline = time.monotonic() + self.hang_seconds
            while self.mode == "hang" and time.monotonic() < deadline:
                if self._stopping.wait(0.05):
                    break
            return None
        simple = self._http_failure(mode)
        if simple is not None:
            return simple
        reply = self.build_reply(body, mode)
        if mode == "wrong_content_type":
            return _Reply(200, "text/plain", reply)
        return _Reply(200, REPLY_TYPE, reply)

    def _http_failure(self, mode: str) -> _Reply | None:
        """Replies that do not depend on the query: HTTP errors and bodies that are no response."""
        if mode == "status_500":
            return _Reply(500, "text/plain", b"internal error\n")
        if mode == "status_503_retry_after":
            return _Reply(503, "text/plain", b"busy\n", {"Retry-After": str(self.retry_after)})
        if mode == "status_429_retry_after":
            return _Reply(429, "text/plain", b"slow down\n", {"Retry-After": str(self.retry_after)})
        if mode == "status_429_retry_after_date":
            # Rounded up to a whole second: an HTTP-date has no fractions, and a client
            # computing "date - now" must not get less than `retry_after`.
            now = dt.datetime.now(dt.UTC)
            when = dt.datetime.fromtimestamp(math.ceil(now.timestamp()) + self.retry_after, dt.UTC)
            date = email.utils.format_datetime(when, usegmt=True)
            return _Reply(429, "text/plain", b"slow down\n", {"Retry-After": date})
        if mode == "status_401":
            return _Reply(
                401, "text/plain", b"unauthorized\n", {"WWW-Authenticate": 'Basic realm="tsa"'}
            )
        if mode == "garbage":
            # First byte 0x00, not 0x30: the body can never be taken for a DER SEQUENCE.
            return _Reply(200, REPLY_TYPE, b"\x00" + secrets.token_bytes(255))
        if mode == "html":
            page = b"<!DOCTYPE html>\n<html><body><h1>Service unavailable</h1></body></html>\n"
            return _Reply(200, "text/html; charset=utf-8", page)
        if mode == "oversized":
            return _Reply(200, REPLY_TYPE, b"\x30" + bytes(OVERSIZED - 1))
        if mode == "oversized_no_length":
            # No Content-Length, body ends when the connection closes: only a streaming
            # size limit on the client side stops it.
            return _Reply(200, REPLY_TYPE, b"\x30" + bytes(OVERSIZED - 1), sized=False)
        return None

    def build_reply(self, query: bytes, mode: str | None = None) -> bytes:
        """The DER TimeStampResp for a DER TimeStampReq, as served in `mode` (default `.mode`).

        Usable without HTTP, e.g. to make a token for a verification test directly.
        """
        mode = self.mode if mode is None else mode
        if mode not in MODES:
            raise ValueError(f"unknown FakeTsa mode {mode!r}")
        try:
            request = tsp.TimeStampReq.load(query)
            request.native  # noqa: B018 - parse everything now, not lazily later
        except (ValueError, TypeError):
            return self._rejection("bad_data_format", "cannot parse TimeStampReq")
        if mode == "reject":
            return self._rejection("bad_alg", "fake TSA rejects this request on purpose")
        if mode == "granted_no_token":
            return bytes(TimeStampResp({"status": {"status": "granted"}}).dump())
        imprint = request["message_imprint"]
        algorithm = imprint["hash_algorithm"]["algorithm"].native
        if DIGEST_SIZES.get(algorithm) != len(imprint["hashed_message"].native):
            return self._rejection("bad_alg", f"unsupported digest {algorithm}")
        req_policy = request["req_policy"].native
        if req_policy is not None and req_policy not in (self.policy, OTHER_POLICY):
            return self._rejection("unaccepted_policy", f"unknown policy {req_policy}")
        if request["extensions"].native:
            return self._rejection("unaccepted_extensions", "no extensions supported")
        token = self._token(request, req_policy or self.policy, mode)
        granted = TimeStampResp({"status": {"status": "granted"}, "time_stamp_token": token})
        return bytes(granted.dump())

    def _rejection(self, fail_info: str, text: str) -> bytes:
        """A status 2 reply with failInfo and statusString, no token (RFC 3161 §2.4.2)."""
        status = {"status": "rejection", "status_string": [text], "fail_info": {fail_info}}
        return bytes(TimeStampResp({"status": status}).dump())

    def _next_serial(self) -> int:
        with self._lock:
            self._serial += 1
            return self._serial

    def _token(self, request: tsp.TimeStampReq, policy: str, mode: str) -> cms.ContentInfo:
        """The signed TimeStampToken, broken in the one way `mode` asks for."""
        pki = self.pki
        now = dt.datetime.now(dt.UTC)
        gen_time = self.gen_time or now.replace(microsecond=now.microsecond // 1000 * 1000)
        imprint = request["message_imprint"]
        hashed = imprint["hashed_message"].native
        if mode == "wrong_imprint":
            hashed = _flip_last_bit(hashed)
        nonce = request["nonce"].native
        if mode == "wrong_nonce":
            nonce = (nonce or 0) + 1

        tsa_cert = x509.Certificate.load(pki.tsa_der)
        root_cert = x509.Certificate.load(pki.root_der)
        tst_fields: dict[str, object] = {
            "version": "v1",
            "policy": policy,
            # The request's AlgorithmIdentifier verbatim: parameters absent or NULL as sent.
            "message_imprint": {
                "hash_algorithm": algos.DigestAlgorithm.load(imprint["hash_algorithm"].dump()),
                "hashed_message": hashed,
            },
            "serial_number": self._next_serial(),
            "gen_time": gen_time,
            "accuracy": {"seconds": 1},
            "tsa": x509.GeneralName({"directory_name": tsa_cert.subject}),
        }
        if nonce is not None:
            tst_fields["nonce"] = nonce
        tst_info = tsp.TSTInfo(tst_fields)
        econtent = tst_info.dump()

        attributes: list[dict[str, object]] = [
            {"type": "content_type", "values": ["tst_info"]},
            {"type": "message_digest", "values": [hashlib.sha256(econtent).digest()]},
            {"type": "signing_time", "values": [_cms_time(gen_time)]},
        ]
        issuer_serial = {
            "issuer": [x509.GeneralName({"directory_name": tsa_cert.issuer})],
            "serial_number": tsa_cert.serial_number,
        }
        if mode == "ess_v1":
            attributes.append(
                {
                    "type": "signing_certificate",
                    "values": [
                        {
                            "certs": [
                                {
                                    "cert_hash": hashlib.sha1(pki.tsa_der).digest(),
                                    "issuer_serial": issuer_serial,
                                }
                            ]
                        }
                    ],
                }
            )
        elif mode != "no_ess":
            hashed_cert = pki.root_der if mode == "wrong_ess" else pki.tsa_der
            # hashAlgorithm is SHA-256, the DEFAULT, so DER leaves it out (RFC 5035 §5.4).
            attributes.append(
                {
                    "type": "signing_certificate_v2",
                    "values": [
                        {
                            "certs": [
                                {
                                    "cert_hash": hashlib.sha256(hashed_cert).digest(),
                                    "issuer_serial": issuer_serial,
                                }
                            ]
                        }
                    ],
                }
            )

        if isinstance(pki.tsa_key, rsa.RSAPrivateKey):
            signature_algorithm = {"algorithm": "rsassa_pkcs1v15", "parameters": core.Null()}
        else:
            signature_algorithm = {"algorithm": "sha256_ecdsa"}
        signer_info = cms.SignerInfo(
            {
                "version": "v1",
                "sid": {
                    "issuer_and_serial_number": {
                        "issuer": tsa_cert.issuer,
                        "serial_number": tsa_cert.serial_number,
                    }
                },
                "digest_algorithm": {"algorithm": "sha256"},
                # asn1crypto encodes SET OF sorted (DER), as RFC 5652 §5.3 wants signedAttrs.
                "signed_attrs": attributes,
                "signature_algorithm": signature_algorithm,
                "signature": b"",
            }
        )
        # RFC 5652 §5.4: the signature covers the attributes as an explicit SET OF (0x31),
        # i.e. the [0] IMPLICIT encoding in the SignerInfo with its first byte replaced.
        signed_bytes = b"\x31" + signer_info["signed_attrs"].dump()[1:]
        signature = self._sign(signed_bytes)
        if mode == "bad_signature":
            signature = _flip_last_bit(signature)
        signer_info["signature"] = signature

        signed_data: dict[str, object] = {
            "version": "v3",
            "digest_algorithms": [{"algorithm": "sha256"}],
            "encap_content_info": {"content_type": "tst_info", "content": tst_info},
            "signer_infos": [signer_info],
        }
        if request["cert_req"].native and mode != "no_certs":
            signed_data["certificates"] = [tsa_cert, root_cert]
        return cms.ContentInfo({"content_type": "signed_data", "content": signed_data})

    def _sign(self, data: bytes) -> bytes:
        key = self.pki.tsa_key
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
