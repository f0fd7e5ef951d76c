"""Outgoing email (password-reset links) through the operator's SMTP server, with the
standard library's smtplib run in a worker thread.

Configured by `[smtp]` (`MINITOOLAI_SMTP__HOST`, ...); without a host the server sends no
mail and the operator makes reset links with `minitoolai accounts reset-link EMAIL`.
smtplib over aiosmtplib: one short conversation per reset request does not need an async
client, and the standard library adds no dependency.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SmtpSettings(BaseModel):
    """The SMTP server that sends the dashboard's email; off while `host` is unset."""

    model_config = ConfigDict(extra="forbid")

    host: str | None = None
    port: int = Field(587, ge=1, le=65535)
    user: str | None = None  # with password: AUTH after the TLS handshake
    password: str | None = None
    from_address: str | None = None  # e.g. "MiniToolAI <no-reply@example.com>"
    # starttls: plain connection upgraded with STARTTLS (port 587); tls: TLS from the first
    # byte (port 465); none: clear text, only for a relay on the same machine or network
    tls: Literal["starttls", "tls", "none"] = "starttls"
    timeout_seconds: float = Field(20.0, gt=0)

    @model_validator(mode="after")
    def _complete(self) -> SmtpSettings:
        if self.host and not self.from_address:
            raise ValueError("smtp.from_address is required when smtp.host is set")
        if bool(self.user) != bool(self.password):
            raise ValueError("set both smtp.user and smtp.password, or neither")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.host)


def build_message(settings: SmtpSettings, to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.from_address
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=(settings.from_address or "").rpartition("@")[2]
                                       .strip("> ") or None)
    message.set_content(body)
    return message


def _send_now(settings: SmtpSettings, message: EmailMessage) -> None:
    """One SMTP conversation (blocking: run in a thread)."""
    context = ssl.create_default_context()
    if settings.tls == "tls":
        client: smtplib.SMTP = smtplib.SMTP_SSL(settings.host, settings.port,
                                                timeout=settings.timeout_seconds,
                                                context=context)
    else:
        client = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_seconds)
    with client:
        if settings.tls == "starttls":
            client.starttls(context=context)
        if settings.user:
            client.login(settings.user, settings.password or "")
        client.send_message(message)


async def send(settings: SmtpSettings, to: str, subject: str, body: str) -> None:
    """Send one email; raises OSError / smtplib.SMTPException when it cannot."""
    message = build_message(settings, to, subject, body)
    await asyncio.to_thread(_send_now, settings, message)
