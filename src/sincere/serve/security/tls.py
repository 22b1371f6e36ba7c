"""TLS for a server: an ``ssl.SSLContext`` from ``--tls-cert`` / ``--tls-key`` files.

Modern settings: TLS 1.2 at least (1.3 preferred by negotiation), forward-secret
AEAD cipher suites only for 1.2 (ECDHE with AES-GCM or ChaCha20-Poly1305; 1.3's
suites are all AEAD), no compression, no session tickets (they would outlive a key
rotation). Problems surface at start-up, each named: a missing or unreadable file, a
file that is not PEM, a key that does not belong to the certificate, a key that
needs a password (give it with ``password``).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from sincere.core.errors import ConfigError

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def server_context(
    cert_file: str | Path, key_file: str | Path, *, password: str | None = None
) -> ssl.SSLContext:
    """A server context serving ``cert_file`` (PEM chain) with ``key_file`` (PEM key)."""
    cert_path, key_path = Path(cert_file), Path(key_file)
    for flag, path in (("--tls-cert", cert_path), ("--tls-key", key_path)):
        _check_readable(flag, path)
    _check_pem(cert_path, "--tls-cert", "CERTIFICATE")
    _check_pem(key_path, "--tls-key", "PRIVATE KEY")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_TICKET | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        # a callable, never None: OpenSSL would otherwise prompt on the terminal
        context.load_cert_chain(cert_path, key_path, password=lambda: password or "")
    except ssl.SSLError as exc:
        where = f"--tls-cert {cert_path} / --tls-key {key_path}"
        raise ConfigError(_explain(exc), where=where) from None
    return context


def _check_readable(flag: str, path: Path) -> None:
    if not path.is_file():
        raise ConfigError("file not found", where=f"{flag} {path}", allowed="a PEM file")
    try:
        path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", where=f"{flag} {path}") from None


def _check_pem(path: Path, flag: str, label: str) -> None:
    text = path.read_bytes()
    if f"-----BEGIN {label}".encode() not in text and not (
        label == "PRIVATE KEY" and b"PRIVATE KEY-----" in text
    ):
        raise ConfigError(
            f"no PEM {label.lower()} in the file",
            where=f"{flag} {path}",
            allowed=f"a PEM file with a '-----BEGIN {label}-----' block",
        )


def _explain(exc: ssl.SSLError) -> str:
    reason = (exc.reason or str(exc)).upper()
    if "KEY_VALUES_MISMATCH" in reason or "MISMATCH" in reason:
        return "the private key does not belong to the certificate"
    if "BAD_DECRYPT" in reason or "PASSWORD" in reason:
        return "the private key is encrypted: give its password, or an unencrypted key"
    return f"cannot load the certificate and key: {exc.reason or exc}"
