"""Small HTTP facts every adapter needs and no SDK exposes consistently: Retry-After, ca_bundle, JSON.

Shared by the Vapi client and the carrier adapters (which otherwise know nothing of each other),
so a server's "wait N seconds" is read the same way everywhere, and a configured ``ca_bundle`` is
always *added* to the trust store the client would use anyway, never put in its place (that would
break every public host).
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import hashlib
import json
import math
import os
import ssl
import tempfile
import threading
import weakref
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import certifi
import httpx
import orjson
import requests
from requests.adapters import HTTPAdapter

from numsync.adapters.base import spells_nul, storable
from numsync.errors import ConfigError

__all__ = [
    "PinnedVerifyAdapter",
    "combined_ca_bundle",
    "default_tls_verify",
    "httpx_tls_verify",
    "loads",
    "parse_retry_after",
    "read_environment_once",
    "ssl_context_with_extra_ca",
    "verify_context",
    "warm_requests_trust_store",
]

def loads(body: bytes | str) -> Any:
    """Decode a JSON body: orjson for the common UTF-8 case (4x faster than ``json`` on a listing
    page, which was the largest single cost per record), ``json`` for what orjson refuses but
    ``json`` reads (UTF-16/32, NaN, integers beyond 64 bits), so answers read exactly as before.
    Raises ValueError when neither can read it.

    Text no database can store becomes U+FFFD (``base.storable``): one such value failed every
    snapshot. U+0000 (JSON's ``\\u0000``; PostgreSQL refuses it) is found by a byte search, so
    only a body that has it is walked. A lone surrogate (``\\ud800``; no UTF-8 encoder takes it)
    makes orjson refuse the body, so what ``json`` reads is always walked.
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return storable(json.loads(body))  # rare; maybe not UTF-8, so the search below can't tell
    if spells_nul(body):
        return storable(value)
    return value


# Where each HTTP stack looks for its trust store when told nothing (else certifi's bundle).
_REQUESTS_TRUST_VARS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
_HTTPX_TRUST_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None if unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _base_trust_file(variables: tuple[str, ...]) -> Path:
    for var in variables:
        value = os.environ.get(var)
        if value and os.path.isfile(value):
            return Path(value)
    return Path(certifi.where())


def _extra_pem(extra: Path, owner: str) -> bytes:
    try:
        pem = Path(extra).read_bytes()
    except OSError as exc:
        raise ConfigError(f"ca_bundle {extra} of {owner} cannot be read ({exc.strerror})") from None
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise ConfigError(f"ca_bundle {extra} of {owner} holds no PEM certificate")
    return pem


def combined_ca_bundle(extra: Path, *, owner: str = "a source") -> Path:
    """For requests-based SDKs: a temp file with requests' usual trust store plus ``extra``.

    The caller pins it as ``verify`` (requests would otherwise let REQUESTS_CA_BUNDLE replace a
    session's setting), hands ``extra`` to its ``PinnedVerifyAdapter`` as well, and deletes the
    file when done. Connections verify against ``extra`` alone first and against this file only
    when that fails (see ``PinnedVerifyAdapter``), so only ``extra`` is read here, while the source
    is configured: listings forked from this process inherit its context instead of each reading
    it again.
    """
    extra_pem = _extra_pem(extra, owner)
    base = _base_trust_file(_REQUESTS_TRUST_VARS).read_bytes()
    fd, name = tempfile.mkstemp(prefix="numsync-ca-", suffix=".pem")
    with os.fdopen(fd, "wb") as out:
        out.write(base.rstrip(b"\n") + b"\n" + extra_pem.rstrip(b"\n") + b"\n")
    _read_now(str(extra))
    return Path(name)


def warm_requests_trust_store() -> None:
    """Read the trust store requests would verify with (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE or
    certifi) into its shared ``verify_context`` now, while a source is configured: listings forked
    later inherit it instead of each reading it again (a source whose clients are made lazily, in
    the listing, calls this when it is built)."""
    _read_now(_requests_trust_store())


def _read_now(ca_file: str) -> None:
    """Build ``ca_file``'s shared ``verify_context`` now, if it is a file; one that cannot be read
    is left for the first connection to report, as it would have without this."""
    if os.path.isfile(ca_file):
        with contextlib.suppress(OSError, ssl.SSLError):
            verify_context(ca_file)


def _requests_trust_store() -> str:
    """What requests verifies with when told ``verify=True`` (a file, or a directory of certificates)."""
    return (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            or requests.utils.DEFAULT_CA_BUNDLE_PATH)


def default_tls_verify() -> ssl.SSLContext:
    """What httpx's ``verify=True`` means (certifi, or SSL_CERT_FILE / SSL_CERT_DIR), built once per
    process and environment: httpx otherwise loads the whole bundle for every client (~30 ms of CPU),
    which a run with three httpx clients paid three times."""
    return _default_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=4)
def _default_context(_cert_file: str | None, _cert_dir: str | None) -> ssl.SSLContext:
    return httpx.create_ssl_context()


def httpx_tls_verify(base_url: str, extra: Path | None, *, owner: str) -> ssl.SSLContext:
    """The TLS context of an httpx client that talks to ``base_url`` alone (it follows no
    redirect): the trust store httpx would use, plus ``extra``'s CAs when given; for an http://
    URL without ``extra``, one that trusts no certificate.

    Why: httpx builds a client's context when the client is made, where requests builds one when
    a connection needs it. Reading certifi's bundle is about 22 ms of OpenSSL's CPU (3.0), spent
    before any listing starts, and a client of an http:// URL (the sandbox's emulations, say) never
    makes a TLS connection. Trusting nothing rather than verifying nothing: were one ever made, it
    would fail. ``extra`` is always read: a bad ca_bundle is a config error whatever the URL.
    """
    if extra is not None:
        return ssl_context_with_extra_ca(extra, owner=owner)
    if urlsplit(base_url).scheme.lower() == "http":
        return _trusting_nothing()
    return default_tls_verify()


@functools.lru_cache(maxsize=1)
def _trusting_nothing() -> ssl.SSLContext:
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificates and host names, trusts no CA


def ssl_context_with_extra_ca(extra: Path, *, owner: str = "a source") -> ssl.SSLContext:
    """For httpx-based clients: the trust store httpx would use, plus the CA(s) in ``extra``."""
    _extra_pem(extra, owner)
    ctx = ssl.create_default_context(cafile=str(_base_trust_file(_HTTPX_TRUST_VARS)))
    try:
        ctx.load_verify_locations(cafile=str(extra))
    except ssl.SSLError as exc:
        raise ConfigError(f"ca_bundle {extra} of {owner} cannot be read as CA certificates ({exc})") from None
    return ctx


def read_environment_once(session: requests.Session, url: str, *, pinned: bool = False) -> None:
    """Take the environment's proxy settings for ``url`` now, then stop ``session`` reading it again.

    With ``trust_env`` on, requests walks every environment variable (proxies), stats ``~/.netrc``
    and reads the CA-bundle variables on *every* request: a third of a Vonage page's CPU. A source
    talks to one host, so its proxies and CA-bundle variables are settled once; a ``.netrc`` entry
    must not replace the SDK's credentials anyway. Unless the source ``pinned`` its own bundle, the
    environment's bundle is read into its shared context now too.
    """
    session.proxies.update(requests.utils.get_environ_proxies(url, no_proxy=None))
    if session.verify is True:  # as requests would read it per request (a pinned bundle wins anyway)
        # named, so that a ``PinnedVerifyAdapter`` verifies against one shared context of it: given
        # ``True``, requests names certifi's file on each new connection, which reads it again
        session.verify = _requests_trust_store()
    session.trust_env = False
    if not pinned and isinstance(session.verify, str) and url.lower().startswith("https:"):
        _read_now(session.verify)  # while the source is configured: listings forked later inherit it


class PinnedVerifyAdapter(HTTPAdapter):
    """A requests transport without hidden retries that pins ``verify`` to our bundle (when given).

    requests would otherwise let REQUESTS_CA_BUNDLE from the environment replace a session's
    ``verify`` on every request, and urllib3 would retry behind our own retry loop.

    ``extra``, the configured ca_bundle that ``bundle`` adds to the usual trust store
    (``combined_ca_bundle``), is tried alone first. Why: reading the whole bundle is about 20 ms
    of OpenSSL's CPU (3.0, some 120 certificates), paid by every run before its listings start,
    while the hosts a ca_bundle is configured for (a TLS-intercepting proxy, the sandbox) are
    signed by that CA. A certificate that does not verify against ``extra`` alone is verified
    against the whole bundle, on a new connection and on every later one for this bundle, so what
    is trusted is exactly what the whole bundle trusts (it holds ``extra``). The request is sent
    again only after a failed handshake, before any of it was sent.
    """

    def __init__(self, bundle: str | Path | None, *, extra: str | Path | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("max_retries", 0)  # requests' own "no retries" (a read timeout stays a ReadTimeout)
        super().__init__(**kwargs)
        self._bundle = str(bundle) if bundle is not None else None
        self._extra = str(extra) if extra is not None and bundle is not None else None

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if self._bundle is not None:
            kwargs["verify"] = self._bundle
        try:
            return super().send(request, **kwargs)
        except requests.exceptions.SSLError as exc:
            if not self._extra_not_enough(exc):
                raise
        return super().send(request, **kwargs)  # verified against the whole bundle now

    def _extra_not_enough(self, exc: requests.exceptions.SSLError) -> bool:
        """Whether ``exc`` is a certificate ``extra`` alone did not verify; if so, the whole bundle
        verifies every connection of this bundle from now on."""
        bundle = self._bundle
        if self._extra is None or bundle is None or bundle in _whole_bundle_needed or not _unverified(exc):
            return False
        _whole_bundle_needed[bundle] = None
        while len(_whole_bundle_needed) > 64:  # the daemon writes a bundle per source and run
            del _whole_bundle_needed[next(iter(_whole_bundle_needed))]
        return True

    def _trust_file(self, ca_file: str) -> str:
        if self._extra is not None and ca_file == self._bundle and ca_file not in _whole_bundle_needed:
            return self._extra
        return ca_file

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Connections that verify against a CA file share one SSLContext that has read it once
        (requests' documented override). Given the file's path instead, urllib3 reads the whole
        bundle again for every new connection: ~45 ms of CPU each, most of a cold listing's cost."""
        host, pool = super().build_connection_pool_key_attributes(request, verify, cert)
        ca_file = pool.get("ca_certs")
        # Plain http needs no context. Building one there also took OpenSSL's locks in a forked
        # listing, where another thread of the parent (an in-process emulator mid-handshake) may
        # have held them at the fork: that listing waited forever.
        if (ca_file and host.get("scheme") == "https" and pool.get("cert_reqs") == "CERT_REQUIRED"
                and "ssl_context" not in pool):
            del pool["ca_certs"]
            pool["ssl_context"] = verify_context(self._trust_file(ca_file))
        return host, pool

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """requests names the CA file on the pool again here, after the pool was chosen; a pool
        that verifies with a shared context (above) must not be told it, or urllib3 loads it into
        that context on every new connection all the same."""
        super().cert_verify(conn, url, verify, cert)
        context = getattr(conn, "conn_kw", {}).get("ssl_context")
        if context is not None and getattr(conn, "ca_certs", None) and context in _shared_contexts:
            conn.ca_certs = None


# The combined bundles (``PinnedVerifyAdapter``) whose extra CA alone did not verify a server,
# newest last.
_whole_bundle_needed: dict[str, None] = {}


def _unverified(exc: BaseException) -> bool:
    text = str(exc)
    return "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text


def verify_context(ca_file: str | Path) -> ssl.SSLContext:
    """The one SSLContext of this process that verifies against ``ca_file`` as it is now.

    Built once per file version; a source builds it when it is configured, so a listing that runs
    in a forked process inherits it instead of reading the bundle again.
    """
    path = str(ca_file)
    return _bundle_context(path, os.stat(path).st_mtime_ns)


_shared_contexts: weakref.WeakSet[ssl.SSLContext] = weakref.WeakSet()


# One context for each bundle's content: ``combined_ca_bundle`` writes a new file for each source
# it builds, so each of the daemon's runs named another path and read the same bundle again (some
# 50 ms of CPU); the same certificates now make the same context.
_contexts_by_content: dict[bytes, ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


@functools.lru_cache(maxsize=8)
def _bundle_context(path: str, _mtime: int) -> ssl.SSLContext:
    digest = hashlib.sha256(Path(path).read_bytes()).digest()
    with _contexts_lock:  # a source's connections ask from several threads
        context = _contexts_by_content.get(digest)
        if context is None:
            context = ssl.create_default_context(cafile=path)
            _shared_contexts.add(context)
            while len(_contexts_by_content) >= 8:  # a bundle edited again and again keeps its newest few
                del _contexts_by_content[next(iter(_contexts_by_content))]
            _contexts_by_content[digest] = context
        return context
