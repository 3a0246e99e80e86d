"""Django's SMTP email backend, made for sending many messages at once: one connection
for a whole batch, and ESMTP PIPELINING (RFC 2920) when the server announces it.

Pipelined, a message costs one round trip instead of four: its content and final dot go
out in the same write as the next message's ``MAIL FROM``, ``RCPT TO`` and ``DATA``,
and the answers are read together. A server without PIPELINING gets Django's plain
sendmail, one message after the other.

``send_each(messages)`` answers for every message: ``None`` (the server accepted it) or
the exception that stopped it. ``NotSent`` means its content never left this process
(the connection broke before), so sending it again later cannot make a duplicate.
"""

import re
import smtplib
import socket

from django.conf import settings
from django.core.mail.backends.smtp import EmailBackend as SmtpEmailBackend
from django.core.mail.message import sanitize_address

_LEADING_DOT = re.compile(rb"(?m)^\.")


class NotSent(Exception):
    """The message's content was never written to the server: it cannot have left."""


def _payload(message_bytes):
    """The DATA content as smtplib writes it: leading dots doubled, CRLF, final dot."""
    data = _LEADING_DOT.sub(b"..", message_bytes)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


class EmailBackend(SmtpEmailBackend):
    """A drop-in for ``django.core.mail.backends.smtp.EmailBackend`` (same settings)."""

    def open(self):
        created = super().open()
        if created and self.connection is not None and self.connection.sock is not None:
            # We coalesce our own writes; Nagle would only hold back a pipelined group's tail.
            self.connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return created

    def send_messages(self, email_messages):
        """Django's contract: the number sent; the first error raised unless fail_silently
        (here after every message was tried, since a pipeline cannot stop half-way)."""
        if not email_messages:
            return 0
        results = self.send_each(email_messages)
        errors = [error for error in results if error is not None]
        if errors and not self.fail_silently:
            raise errors[0]
        return sum(1 for error in results if error is None)

    def send_each(self, email_messages):
        """Send ``email_messages`` over one connection; one result per message (``None``
        when accepted, else the exception). The connection stays open for the next call;
        it is closed (and ``self.connection`` is None) when it broke."""
        with self._lock:
            if not self.connection:
                try:
                    self.open()
                except OSError as error:
                    return [NotSent(f"connect: {error}") for _ in email_messages]
                if not self.connection:  # fail_silently swallowed the error
                    return [NotSent("connect failed") for _ in email_messages]
            connection = self.connection
            try:
                connection.ehlo_or_helo_if_needed()
            except (smtplib.SMTPException, OSError) as error:
                self._drop()
                return [NotSent(f"helo: {error}") for _ in email_messages]
            if connection.does_esmtp and connection.has_extn("pipelining"):
                return self._send_pipelined(email_messages)
            return self._send_one_by_one(email_messages)

    # --- plain ----------------------------------------------------------------------

    def _send_one_by_one(self, email_messages):
        results = []
        for index, message in enumerate(email_messages):
            try:
                self._send_or_raise(message)
            except (smtplib.SMTPRecipientsRefused, smtplib.SMTPResponseException) as error:
                results.append(error)  # the server answered; sendmail already sent RSET
                if self.connection.sock is None:  # a 421: smtplib closed the connection
                    results.extend(NotSent(f"server closed: {error}") for _ in email_messages[index + 1:])
                    self._drop()
                    return results
                continue
            except (smtplib.SMTPException, OSError) as error:  # the connection broke mid-exchange
                results.append(error)
                results.extend(NotSent(f"connection lost: {error}") for _ in email_messages[index + 1:])
                self._drop()
                return results
            results.append(None)
        return results

    def _send_or_raise(self, email_message):
        if not email_message.recipients():
            return
        sender, recipients, data = self._envelope(email_message)
        self.connection.sendmail(sender, recipients, data)

    # --- pipelined ------------------------------------------------------------------

    def _envelope(self, email_message):
        encoding = email_message.encoding or settings.DEFAULT_CHARSET
        sender = sanitize_address(email_message.from_email, encoding)
        recipients = [sanitize_address(address, encoding) for address in email_message.recipients()]
        return sender, recipients, email_message.message().as_bytes(linesep="\r\n")

    def _commands(self, sender, recipients, data):
        connection = self.connection
        options = f" SIZE={len(data)}" if connection.has_extn("size") else ""
        lines = [f"MAIL FROM:{smtplib.quoteaddr(sender)}{options}\r\n"]
        lines += [f"RCPT TO:{smtplib.quoteaddr(recipient)}\r\n" for recipient in recipients]
        lines.append("DATA\r\n")
        return "".join(lines).encode(connection.command_encoding)

    def _send_pipelined(self, email_messages):
        """Per message one write (the previous content + this envelope + DATA) and one
        read of their answers. A refusal ends that message's transaction with RSET."""
        connection = self.connection
        results = [None] * len(email_messages)
        in_flight = None  # (index, payload): 354 received, content goes with the next write
        index = -1
        try:
            for index, message in enumerate(email_messages):
                if not message.recipients():
                    continue
                sender, recipients, data = self._envelope(message)
                head = in_flight[1] if in_flight else b""
                connection.send(head + self._commands(sender, recipients, data))
                if in_flight:
                    self._read_data_answer(in_flight[0], results)
                    in_flight = None
                mail_code, mail_answer = connection.getreply()
                refused = {}
                for recipient in recipients:
                    code, answer = connection.getreply()
                    if code not in (250, 251):
                        refused[recipient] = (code, answer)
                data_code, data_answer = connection.getreply()
                if mail_code != 250:
                    error = smtplib.SMTPSenderRefused(mail_code, mail_answer, sender)
                elif len(refused) == len(recipients):
                    error = smtplib.SMTPRecipientsRefused(refused)
                elif data_code != 354:
                    error = smtplib.SMTPDataError(data_code, data_answer)
                else:
                    in_flight = (index, _payload(data))
                    continue
                results[index] = error
                if data_code == 354:  # accepted DATA after all: end it empty, then forget it
                    connection.send(b".\r\n")
                    connection.getreply()
                connection.rset()
            if in_flight:
                connection.send(in_flight[1])
                self._read_data_answer(in_flight[0], results)
                in_flight = None
        except (smtplib.SMTPException, OSError) as error:
            # The content of ``in_flight`` was handed over: it may have left (uncertain).
            # The message being written had not sent its content: it did not.
            if in_flight:
                results[in_flight[0]] = error
            if index >= 0 and results[index] is None and (not in_flight or in_flight[0] != index):
                results[index] = NotSent(f"connection lost: {error}")
            for later in range(index + 1, len(email_messages)):
                results[later] = NotSent(f"connection lost: {error}")
            self._drop()
        return results

    def _read_data_answer(self, index, results):
        code, answer = self.connection.getreply()
        if code != 250:
            results[index] = smtplib.SMTPDataError(code, answer)

    def _drop(self):
        connection, self.connection = self.connection, None
        if connection is not None:
            try:
                connection.close()
            except OSError:  # pragma: no cover - closing a broken socket
                pass
