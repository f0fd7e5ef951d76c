"""Outgoing email (minitoolai/mail.py) against a real SMTP server on loopback (aiosmtpd):
the message's headers and body, logging in, and the settings' checks."""

from __future__ import annotations

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
