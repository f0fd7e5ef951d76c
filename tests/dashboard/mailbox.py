"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, for the tests of
the emails the dashboard sends, and a live server that sends its email there."""

from __future__ import annotations

import email
import email.policy
import queue
import re
from datetime import timedelta

import pytest
from sqlalchemy import update

from minitoolai.app import create_app
from minitoolai.dashboard.tables import password_resets
from minitoolai.db.engine import Database
from tests.servers import ThreadedServer, free_port

RESET_LINK = re.compile(r"https?://\S+/reset/[A-Za-z0-9_-]+")


class Mailbox:
    """Messages as the SMTP server accepted them, in arrival order."""

    def __init__(self) -> None:
        self.port = free_port()
        self._inbox: queue.Queue = queue.Queue()
        self.received: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's handler hook
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self._inbox.put((envelope.rcpt_tos, message))
        return "250 Message accepted for delivery"

    def next(self, timeout: float = 20.0):
        """(recipients, message) of the next email; fails if none comes within `timeout`
        (a bound on a hang, not an assertion about speed)."""
        try:
            rcpt, message = self._inbox.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no email arrived within {timeout} s")
        self.received.append(message)
        return rcpt, message

    def empty(self) -> bool:
        return self._inbox.empty()

    def settings(self) -> dict:
        """The server's `[smtp]` settings to send here."""
        return {"host": "127.0.0.1", "port": str(self.port), "tls": "none",
                "from_address": "MiniToolAI <no-reply@example.com>"}


def reset_link(message) -> str:
    match = RESET_LINK.search(message.get_content())
    assert match, "no reset link in the email"
    return match.group(0)


@pytest.fixture
def mailbox():
    pytest.importorskip("aiosmtpd", reason="pip install aiosmtpd (the test extra)")
    from aiosmtpd.controller import Controller

    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture
def live_mail(dash_settings, mailbox):
    """The server, sending its email to `mailbox`, its links on its own address."""
    port = free_port()
    settings = dash_settings(public_url=f"http://127.0.0.1:{port}", smtp=mailbox.settings())
    with ThreadedServer(create_app(settings), port=port) as server:
        yield server


async def expire_resets(database_url: str) -> None:
    """Move every reset link's expiry into the past, by the database's clock (as if the
    link's hour went by)."""
    db = Database(database_url, pool_size=1)
    try:
        await db.sync_clock()
        async with db.write() as conn:
            await conn.execute(update(password_resets).values(
                expires_at=db.now() - timedelta(seconds=1)))
    finally:
        await db.dispose()
