"""Outgoing email (minitoolai/mail.py) against a real SMTP server on loopback (aiosmtpd):
the message's headers and body, logging in, and the settings' checks."""

from __future__ import annotations

import smtplib

import pytest

from minitoolai.config import load_settings
from minitoolai.errors import ConfigError
from minitoolai.mail import SmtpSettings, send
from tests.dashboard.mailbox import mailbox  # noqa: F401 - a fixture
from tests.servers import free_port


async def test_send_plain(mailbox):  # noqa: F811
    settings = SmtpSettings(**mailbox.settings())
    await send(settings, "ann@example.com", "Hello", "Line one\nhttps://x.example/reset/abc\n")
    recipients, message = mailbox.next()
    assert recipients == ["ann@example.com"]
    assert message["Subject"] == "Hello" and message["To"] == "ann@example.com"
    assert message["From"] == "MiniToolAI <no-reply@example.com>"
    assert message["Message-ID"].endswith("@example.com>") and message["Date"]
    assert message.get_content().replace("\r\n", "\n") == \
        "Line one\nhttps://x.example/reset/abc\n"


async def test_send_with_login(mailbox):  # noqa: F811
    """AUTH with the configured user (a server that allows it without TLS)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    seen = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        seen.append((auth_data.login.decode() if isinstance(auth_data.login, bytes)
                     else auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"s3cret")

    port = free_port()  # a second server, asking for AUTH, delivering to the same mailbox
    controller = Controller(mailbox, hostname="127.0.0.1", port=port,
                            authenticator=authenticator, auth_require_tls=False)
    controller.start()
    try:
        settings = SmtpSettings(**{**mailbox.settings(), "port": port, "user": "mailer",
                                   "password": "s3cret"})
        await send(settings, "bob@example.com", "Hi", "body\n")
        assert mailbox.next()[0] == ["bob@example.com"]
    finally:
        controller.stop()
    assert seen == [("mailer", b"s3cret")]


def test_settings_from_the_environment():
    settings = load_settings({"MINITOOLAI_SMTP__HOST": "mail.example.com",
                              "MINITOOLAI_SMTP__PORT": "465", "MINITOOLAI_SMTP__TLS": "tls",
                              "MINITOOLAI_SMTP__FROM_ADDRESS": "no-reply@example.com"})
    assert settings.smtp.enabled and settings.smtp.port == 465 and settings.smtp.tls == "tls"
    assert not load_settings({}).smtp.enabled


@pytest.mark.parametrize("environ,named", [
    ({"MINITOOLAI_SMTP__HOST": "mail.example.com"}, "from_address"),
    ({"MINITOOLAI_SMTP__HOST": "m", "MINITOOLAI_SMTP__FROM_ADDRESS": "a@b.c",
      "MINITOOLAI_SMTP__USER": "u"}, "password"),
    ({"MINITOOLAI_SMTP__TLS": "ssl"}, "smtp.tls"),
])
def test_bad_settings_name_the_key(environ, named):
    with pytest.raises(ConfigError, match=named):
        load_settings(environ)


def _self_signed(tmp_path):
    """A certificate for 127.0.0.1 that no authority signed (and its key), as files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


async def test_starttls_verifies_the_certificate(mailbox, tmp_path):  # noqa: F811
    """With tls = "starttls" the connection is upgraded before anything is sent, and a
    certificate no trusted authority signed is refused: the password and the link never
    cross the network in clear nor to an impostor."""
    import ssl

    from aiosmtpd.controller import Controller

    cert_file, key_file = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, tls_context=context,
                            require_starttls=True)
    controller.start()
    try:
        settings = SmtpSettings(**{**mailbox.settings(), "port": port, "tls": "starttls"})
        with pytest.raises(ssl.SSLCertVerificationError):
            await send(settings, "eve@example.com", "Hi", "body\n")
        plain = SmtpSettings(**{**mailbox.settings(), "port": port, "tls": "none"})
        with pytest.raises(smtplib.SMTPException):  # this server insists on STARTTLS
            await send(plain, "eve@example.com", "Hi", "body\n")
    finally:
        controller.stop()
    assert mailbox.empty()
