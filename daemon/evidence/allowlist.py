"""Where stampd may send an OpenTimestamps request: clean URLs, and the upgrade allow-list.

A pending attestation names the calendar that will complete it, and that URI is read from the
``.ots`` file: whoever wrote the file chose it. Upgrading asks that URI, so an open upgrade
would let any proof file point stampd at any address it can reach — an SSRF through the
daemon (reference ``opentimestamps.md`` §2, "Whitelist / SSRF"). The reference client asks a
pending URI only when it matches its whitelist: same scheme, same path, host matched as a
glob. stampd does the same with the configured ``anchor.allow`` patterns, more strictly:

* a URL is refused outright unless it is *clean* (:func:`parse_clean_url`): ``http`` or
  ``https``; no user information, query or fragment; a host that is a DNS name, an IPv4
  address in dotted-quad form or a bracketed IPv6 address (never a numeric name such as
  ``2130706433`` or ``127.1``, which resolvers read as an address); a path of plain segments
  (no ``%``, ``.`` or ``..`` segments, no ``//``); at most 1000 characters (the limit of a
  pending URI, reference §1.4). Hosts are compared in lower case, international names in their
  IDNA (``xn--``) form; the scheme's default port counts as no port;
* ``http`` only for loopback hosts (``127.0.0.0/8``, ``::1``, ``localhost``), where nothing
  lies between stampd and the calendar; everywhere else plain HTTP can be read and altered on
  the way;
* a pattern is ``scheme://host[:port][/path]``. Its host is a name or address compared
  exactly, or ``*.`` followed by at least two labels: ``*`` stands for **one or more whole
  labels**, so ``https://*.calendar.opentimestamps.org`` allows
  ``https://alice.btc.calendar.opentimestamps.org`` but neither
  ``https://calendar.opentimestamps.org`` nor ``https://a.calendar.opentimestamps.org.evil.com``.
  ``*`` elsewhere is refused. The scheme must be the same; the port must be the same (a URL
  with a port matches only a pattern with that port); the path must be the same, a trailing
  ``/`` aside (``/cal`` and ``/cal/`` are one path; nothing below it is allowed).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

#: The longest URL accepted: a pending attestation's URI is at most 1000 bytes (reference §1.4).
MAX_URL_LENGTH: Final = 1000
#: Host names that always mean this machine. Only the exact name: ``*.localhost`` resolves
#: wherever the resolver says, so it is not trusted as loopback.
LOOPBACK_NAMES: Final = frozenset({"localhost"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")
_WILDCARD = "*"

Scheme = Literal["http", "https"]


class UnsafeUrl(ValueError):
    """A URL or pattern stampd will not use; the message says why, after the quoted value."""


@dataclass(frozen=True)
class CleanUrl:
    """A URL that passed :func:`parse_clean_url`, in its normalised form."""

    scheme: Scheme
    #: Lower-case ASCII: a DNS name in IDNA form, a dotted-quad IPv4 address, or a compressed
    #: IPv6 address (without brackets).
    host: str
    #: None for the scheme's default port (also when it was written out).
    port: int | None
    #: The path as written (validated), ``/`` when it was empty.
    path: str

    @property
    def netloc(self) -> str:
        """``host[:port]``, with an IPv6 address in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def text(self) -> str:
        """The normalised URL."""
        return f"{self.scheme}://{self.netloc}{self.path}"

    @property
    def base(self) -> str:
        """The URL as a base that ends in ``/``, to which a calendar's endpoints are appended.

        ``https://h/cal`` gives ``https://h/cal/``, so that its submit URL is
        ``https://h/cal/digest``: the path names where the calendar lives. (The reference
        client joins with ``urljoin``, which would drop ``cal``; reference §2.)
        """
        return self.text if self.path.endswith("/") else self.text + "/"

    @property
    def is_loopback(self) -> bool:
        """Whether the host is this machine (where plain ``http`` is acceptable)."""
        return is_loopback_host(self.host)

    @property
    def path_key(self) -> str:
        """The path as compared: ``/cal`` and ``/cal/`` are one path; the root is ``/``."""
        return self.path.rstrip("/") or "/"


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (normalised, as :attr:`CleanUrl.host`) always means this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_clean_url(text: str) -> CleanUrl:
    """``text`` as a :class:`CleanUrl`; :class:`UnsafeUrl` saying why it is not one."""
    return _parse(text, wildcard=False)[0]


def _parse(text: str, *, wildcard: bool) -> tuple[CleanUrl, bool]:
    """The URL (its host without the ``*.`` of a pattern) and whether it had that wildcard."""
    if len(text) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"is longer than {MAX_URL_LENGTH} characters")
    if not text.isprintable() or any(character.isspace() for character in text):
        raise UnsafeUrl("contains spaces or control characters")
    # A backslash is a "/" to browsers and not to urlsplit: no reading of it is safe.
    for character, what in (("\\", "a backslash"), ("?", "a query"), ("#", "a fragment")):
        if character in text:
            raise UnsafeUrl(f"must not contain {what}")
    try:
        parts = urlsplit(text)
    except ValueError:  # urlsplit checks bracketed hosts itself (Python 3.11.4 and later)
        raise UnsafeUrl("is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not text[len(scheme) :].startswith("://"):
        raise UnsafeUrl("must be an http:// or https:// URL")
    if "@" in parts.netloc:
        raise UnsafeUrl("must not contain user information (user@ or user:password@)")
    host_text, port = _split_port(parts.netloc)
    starred = wildcard and host_text.startswith(_WILDCARD + ".")
    if starred:
        host_text = host_text[2:]
    if wildcard and _WILDCARD in host_text:
        raise UnsafeUrl('may use "*" only as its whole first label ("https://*.example.org")')
    host = _host(host_text)
    if starred and (":" in host or host.count(".") < 1 or _is_ipv4(host)):
        raise UnsafeUrl('"*." must be followed by a DNS name of at least two labels')
    url = CleanUrl(
        scheme="http" if scheme == "http" else "https",
        host=host,
        port=None if port == _DEFAULT_PORTS[scheme] else port,
        path=_path(parts.path),
    )
    return url, starred


def _split_port(netloc: str) -> tuple[str, int | None]:
    if netloc.startswith("["):
        close = netloc.find("]")
        if close == -1:
            raise UnsafeUrl("has an unclosed [ in its host")
        host, rest = netloc[: close + 1], netloc[close + 1 :]
    else:
        host, colon, port_text = netloc.partition(":")
        rest = colon + port_text
    if not rest:
        return host, None
    digits = rest[1:]
    if not rest.startswith(":") or not (digits.isascii() and digits.isdigit()):
        raise UnsafeUrl("has a port that is not a number")
    port = int(digits)
    if not 1 <= port <= 65535:
        raise UnsafeUrl("has a port outside 1..65535")
    return host, port


def _host(text: str) -> str:
    if not text:
        raise UnsafeUrl("has no host")
    if text.startswith("[") and text.endswith("]"):
        if "%" in text:
            raise UnsafeUrl("has an IPv6 zone (%...), which is not an address of the network")
        try:
            return ipaddress.IPv6Address(text[1:-1]).compressed
        except ValueError:
            raise UnsafeUrl("has a bracketed host that is not an IPv6 address") from None
    if _is_ipv4(text):
        return text
    try:
        # IDNA 2003 (stdlib): lower-cases and maps an international name to its xn-- form.
        ascii_host = text.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise UnsafeUrl("has a host that is not a valid DNS name") from None
    labels = ascii_host.split(".")
    if len(ascii_host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise UnsafeUrl("has a host that is not a valid DNS name (letters, digits, -)")
    if labels[-1].isdigit():
        # Resolvers read "127.1" or "2130706433" as IPv4 addresses: such a name would match
        # as a name and connect as an address.
        raise UnsafeUrl("has a numeric host that is not a dotted-quad IPv4 address")
    return ascii_host


def _is_ipv4(text: str) -> bool:
    try:
        # Strict: four decimal parts, no leading zeros (octal in some resolvers).
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _path(path: str) -> str:
    if not path or path == "/":
        return "/"
    segments = path[1:].split("/")
    if segments[-1] == "":
        segments.pop()  # one trailing slash
    for segment in segments:
        if not _SEGMENT.fullmatch(segment) or segment in (".", ".."):
            raise UnsafeUrl(
                "has a path that is not plain segments of letters, digits and . _ ~ -"
                ' (no "%", "//", "." or "..")'
            )
    return path


def check_transport(url: CleanUrl) -> None:
    """Refuse plain ``http`` to anything but this machine (:class:`UnsafeUrl`)."""
    if url.scheme == "http" and not url.is_loopback:
        raise UnsafeUrl(
            "must use https:// (http:// only for loopback hosts: 127.0.0.1, ::1, localhost;"
            " plain HTTP can be read and altered on the way)"
        )


@dataclass(frozen=True)
class UrlPattern:
    """One allow-list pattern (module docstring): scheme, host or ``*.``-glob, port, path."""

    #: The pattern with its host, port and path normalised (``*.`` kept).
    url: CleanUrl
    #: Whether the host is ``*.`` + :attr:`CleanUrl.host` (one or more labels, then the host).
    wildcard: bool

    @classmethod
    def parse(cls, text: str) -> UrlPattern:
        """The pattern ``text``; :class:`UnsafeUrl` when it is not one stampd accepts."""
        url, wildcard = _parse(text, wildcard=True)
        check_transport(url)
        if wildcard and url.scheme == "http":
            raise UnsafeUrl("must use https:// (a *. host is never a loopback host)")
        return cls(url, wildcard)

    @property
    def text(self) -> str:
        """The normalised pattern, as it would be written."""
        return self.url.text.replace("://", "://*.", 1) if self.wildcard else self.url.text

    def matches(self, url: CleanUrl) -> bool:
        """Whether the clean ``url`` is one this pattern allows."""
        if (url.scheme, url.port, url.path_key) != (
            self.url.scheme,
            self.url.port,
            self.url.path_key,
        ):
            return False
        if not self.wildcard:
            return url.host == self.url.host
        # "*" is one or more whole labels: a proper suffix at a dot, never an address.
        return url.host.endswith("." + self.url.host) and not _is_address(url.host)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class UrlAllowList:
    """The URLs at which pending attestations may be upgraded (``anchor.allow``)."""

    patterns: tuple[UrlPattern, ...]

    @classmethod
    def from_patterns(cls, patterns: Iterable[str]) -> UrlAllowList:
        """The allow-list of ``patterns``; :class:`UnsafeUrl` naming the first bad one."""
        parsed = []
        for text in patterns:
            try:
                parsed.append(UrlPattern.parse(text))
            except UnsafeUrl as error:
                raise UnsafeUrl(f"allow pattern {text!r} {error}") from None
        return cls(tuple(parsed))

    def resolve(self, url: str) -> CleanUrl:
        """The normalised URL to ask for pending URI ``url``; :class:`UnsafeUrl` saying why not.

        Ask :attr:`CleanUrl.text` (or :attr:`CleanUrl.base`), never ``url`` as written: what
        was checked is then exactly what is fetched (an IDNA mapping or a default port in the
        raw text cannot be read differently by the HTTP client).
        """
        try:
            clean = parse_clean_url(url)
            check_transport(clean)
        except UnsafeUrl as error:
            raise UnsafeUrl(f"not a clean URL: {error}") from None
        if any(pattern.matches(clean) for pattern in self.patterns):
            return clean
        raise UnsafeUrl("not in the allow-list (anchor.allow)")

    def refusal(self, url: str) -> str | None:
        """Why ``url`` may not be asked, or None when it may (a pattern matches it)."""
        try:
            self.resolve(url)
        except UnsafeUrl as error:
            return str(error)
        return None

    def allows(self, url: str) -> bool:
        """Whether a pending attestation's URI ``url`` may be asked for an upgrade."""
        return self.refusal(url) is None
