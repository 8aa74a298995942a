"""A real SMTP server on 127.0.0.1 (aiosmtpd) that keeps what it receives."""

from __future__ import annotations

import logging
import socket
import ssl
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

# The server's own chatter (its thread outlives a test's captured stderr): off.
logging.getLogger("mail.log").propagate = False
logging.getLogger("mail.log").addHandler(logging.NullHandler())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    user: str | None

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.raw, policy=policy.default)  # type: ignore[return-value]


@dataclass
class _Handler:
    received: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)  # recipient -> SMTP answer

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: Any) -> str:  # fmt: skip
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        user = session.auth_data.login.decode() if session.auth_data else None
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content, user)
        )
        return "250 Message accepted for delivery"


class SmtpServer:
    """aiosmtpd on a free loopback port; with `login` it requires AUTH, with `tls`
    (a server-side SSLContext) it offers STARTTLS and requires it."""

    def __init__(self, *, login: tuple[str, str] | None = None, tls: ssl.SSLContext | None = None):
        self.handler = _Handler()
        self.port = free_port()
        kw: dict[str, Any] = {}
        if login is not None:

            def authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                             auth_data: Any) -> AuthResult:  # fmt: skip
                ok = (
                    isinstance(auth_data, LoginPassword)
                    and (auth_data.login.decode(), auth_data.password.decode()) == login
                )
                return AuthResult(success=ok, handled=False, auth_data=auth_data)

            kw |= {"authenticator": authenticate, "auth_required": True,
                   "auth_require_tls": tls is not None}  # fmt: skip
        if tls is not None:
            kw |= {"tls_context": tls, "require_starttls": True}
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, **kw)
        self.controller.start()

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    @property
    def refuse(self) -> dict[str, str]:
        return self.handler.refuse

    def close(self) -> None:
        self.controller.stop()
