"""A real SMTP server for the tests (aiosmtpd on a free port, in a thread): it keeps
every message it accepted, and answers 4xx/5xx for recipients named for it."""

import email
import logging
import socket
import threading

from aiosmtpd.controller import Controller

logging.getLogger("mail.log").setLevel(logging.WARNING)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sink:
    """Recipients starting with ``tempfail`` get 451 at RCPT, ``reject`` get 550;
    ``pipelining`` announces ESMTP PIPELINING (aiosmtpd reads pipelined commands in order)."""

    def __init__(self, *, pipelining=False):
        self.messages = []
        self.lock = threading.Lock()
        self.tempfail_left = {}
        self.pipelining = pipelining
        self.data_rejects = set()  # recipients whose message is refused at the end of DATA
        self.drop_after = None  # close the connection after this many accepted messages

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        local = address.split("@")[0]
        if local.startswith("reject"):
            return "550 5.1.1 No such user"
        if local.startswith("tempfail"):
            left = self.tempfail_left.get(address, 1)
            if left > 0:
                self.tempfail_left[address] = left - 1
                return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        message = email.message_from_bytes(envelope.content)
        if set(envelope.rcpt_tos) & self.data_rejects:
            return "554 5.6.0 Message refused"
        with self.lock:
            self.messages.append((list(envelope.rcpt_tos), message))
            if self.drop_after is not None and len(self.messages) >= self.drop_after:
                self.drop_after = None
                server.transport.close()  # the answer to this message never arrives
        return "250 2.0.0 Queued"

    def recipients(self):
        with self.lock:
            return [to for tos, _ in self.messages for to in tos]


class SmtpServer:
    def __init__(self, *, pipelining=False):
        self.sink = Sink(pipelining=pipelining)
        self.port = free_port()
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=self.port)

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *exc):
        self.controller.stop()

    @property
    def url(self):
        return f"smtp://127.0.0.1:{self.port}"
