"""TLS: a server context from cert/key files, real TLS on 127.0.0.1, clear errors on bad files."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sincere.core.errors import ConfigError
from sincere.serve.security.tls import server_context


def _self_signed(
    folder: Path, name: str = "server", password: bytes | None = None
) -> tuple[Path, Path]:
    """A fresh P-256 key and a self-signed certificate for 127.0.0.1 / localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    alt = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(alt, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    encryption = (
        serialization.NoEncryption()
        if password is None
        else serialization.BestAvailableEncryption(password)
    )
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    return cert_path, key_path


def test_real_tls_round_trip_on_loopback(tmp_path: Path) -> None:
    """A tiny aiohttp app served over TLS answers a client that trusts the self-signed cert."""
    cert, key = _self_signed(tmp_path)
    context = server_context(cert, key)

    async def hello(request: web.Request) -> web.Response:
        assert request.transport is not None
        version = request.transport.get_extra_info("ssl_object").version()
        return web.json_response({"tls": request.secure, "version": version})

    async def main() -> dict[str, object]:
        app = web.Application()
        app.router.add_get("/hello", hello)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = runner.addresses[0][1]
        try:
            client_ctx = ssl.create_default_context(cafile=str(cert))
            timeout = aiohttp.ClientTimeout(total=10)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                url = f"https://127.0.0.1:{port}/hello"
                async with session.get(url, ssl=client_ctx) as resp:
                    body: dict[str, object] = await resp.json()
                # a client that does not trust the certificate is refused by the handshake
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    await session.get(url, ssl=ssl.create_default_context())
            return body
        finally:
            await runner.cleanup()

    body = asyncio.run(asyncio.wait_for(main(), 20))
    assert body["tls"] is True
    assert body["version"] in ("TLSv1.2", "TLSv1.3")


def test_context_refuses_old_protocols(tmp_path: Path) -> None:
    """The context's floor is TLS 1.2 and it never compresses."""
    cert, key = _self_signed(tmp_path)
    context = server_context(cert, key)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION


def test_missing_file_is_named(tmp_path: Path) -> None:
    """A missing certificate or key file is named with its flag."""
    cert, key = _self_signed(tmp_path)
    with pytest.raises(ConfigError, match=r"--tls-cert .*nope\.crt: file not found"):
        server_context(tmp_path / "nope.crt", key)
    with pytest.raises(ConfigError, match=r"--tls-key .*nope\.key: file not found"):
        server_context(cert, tmp_path / "nope.key")


def test_not_pem_is_named(tmp_path: Path) -> None:
    """A file without a PEM block says which block it needed."""
    cert, key = _self_signed(tmp_path)
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(ConfigError, match=r"no PEM certificate.*BEGIN CERTIFICATE"):
        server_context(junk, key)
    with pytest.raises(ConfigError, match="no PEM private key"):
        server_context(cert, junk)


def test_mismatched_key_is_named(tmp_path: Path) -> None:
    """A key from another pair is reported as not belonging to the certificate."""
    cert, _ = _self_signed(tmp_path, "a")
    _, other_key = _self_signed(tmp_path, "b")
    with pytest.raises(ConfigError, match="private key does not belong to the certificate"):
        server_context(cert, other_key)


def test_encrypted_key_needs_its_password(tmp_path: Path) -> None:
    """An encrypted key fails clearly without a password (no terminal prompt), loads with it."""
    cert, key = _self_signed(tmp_path, password=b"s3cret-pass")
    with pytest.raises(ConfigError, match="encrypted"):
        server_context(cert, key)
    assert isinstance(server_context(cert, key, password="s3cret-pass"), ssl.SSLContext)
