"""The pipelining SMTP backend (nurturing/mail.py) against a real SMTP server: with and
without PIPELINING announced, refusals reported per message, a broken connection
telling the message that may have left from the ones that cannot have."""

import smtplib

import pytest
from django.core.mail import EmailMessage

from nurturing.dispatch import Permanent, Transient, Uncertain, classify
from nurturing.mail import EmailBackend, NotSent

from .smtp import SmtpServer


def backend_for(server):
    return EmailBackend(host="127.0.0.1", port=server.port, username="", password="", use_tls=False,
                        use_ssl=False, timeout=10)


def messages(*recipients):
    return [EmailMessage(f"Oi {to}", f".linha com ponto\nOlá {to}\n", "news@paletes.example", [to])
            for to in recipients]


class CountingSmtp(smtplib.SMTP):
    """Counts the writes to the server (each one is followed by a wait for answers)."""

    writes = 0

    def send(self, s):
        CountingSmtp.writes += 1
        return super().send(s)


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_group_goes_out_over_one_connection_and_every_message_arrives_intact(pipelining, settings):
    with SmtpServer(pipelining=pipelining) as server:
        backend = backend_for(server)
        backend.open()
        backend.connection.ehlo_or_helo_if_needed()
        assert backend.connection.has_extn("pipelining") is pipelining
        first = backend.connection
        assert backend.send_each(messages("a@x.com.br", "b@x.com.br", "c@x.com.br")) == [None, None, None]
        assert backend.send_each(messages("d@x.com.br")) == [None]
        assert backend.connection is first
        backend.close()
    assert server.sink.recipients() == ["a@x.com.br", "b@x.com.br", "c@x.com.br", "d@x.com.br"]
    _, message = server.sink.messages[1]
    assert message["Subject"] == "Oi b@x.com.br"
    assert message.get_payload(decode=True).decode().startswith(".linha com ponto\r\nOlá")  # dot-stuffing undone


def test_pipelined_a_message_costs_one_write_instead_of_four(monkeypatch):
    monkeypatch.setattr(EmailBackend, "connection_class", property(lambda self: CountingSmtp))
    writes = {}
    for pipelining in (True, False):
        with SmtpServer(pipelining=pipelining) as server:
            backend = backend_for(server)
            backend.open()
            backend.connection.ehlo_or_helo_if_needed()
            CountingSmtp.writes = 0
            assert backend.send_each(messages(*[f"l{n}@x.com.br" for n in range(10)])) == [None] * 10
            writes[pipelining] = CountingSmtp.writes
            backend.close()
        assert len(server.sink.messages) == 10
    assert writes == {True: 11, False: 40}


@pytest.mark.parametrize("pipelining", [True, False])
def test_refusals_are_reported_per_message_and_the_others_still_leave(pipelining):
    with SmtpServer(pipelining=pipelining) as server:
        server.sink.data_rejects.add("dado@x.com.br")
        backend = backend_for(server)
        results = backend.send_each(messages("a@x.com.br", "reject1@x.com.br", "tempfail1@x.com.br",
                                             "dado@x.com.br", "b@x.com.br"))
        backend.close()
    ok, rejected, tempfailed, data_refused, ok_again = results
    assert ok is None and ok_again is None
    assert isinstance(classify(rejected), Permanent) and classify(rejected).bounced
    assert isinstance(classify(tempfailed), Transient)
    assert isinstance(data_refused, smtplib.SMTPDataError) and isinstance(classify(data_refused), Permanent)
    assert server.sink.recipients() == ["a@x.com.br", "b@x.com.br"]


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_broken_connection_leaves_only_the_message_in_flight_uncertain(pipelining):
    with SmtpServer(pipelining=pipelining) as server:
        server.sink.drop_after = 2  # accepts the 2nd message, then hangs up before answering
        backend = backend_for(server)
        results = backend.send_each(messages(*[f"l{n}@x.com.br" for n in range(5)]))
        assert backend.connection is None
        assert backend.send_each(messages("depois@x.com.br")) == [None]  # reconnects
        backend.close()
    assert results[0] is None
    assert isinstance(classify(results[1]), Uncertain)  # it did arrive, but no answer came back
    assert all(isinstance(error, NotSent) and isinstance(classify(error), Transient) for error in results[2:])
    assert server.sink.recipients() == ["l0@x.com.br", "l1@x.com.br", "depois@x.com.br"]


def test_an_unreachable_server_sends_nothing_and_says_so():
    with SmtpServer() as server:
        port = server.port
    backend = EmailBackend(host="127.0.0.1", port=port, username="", password="", use_tls=False, use_ssl=False,
                           timeout=2)
    results = backend.send_each(messages("a@x.com.br", "b@x.com.br"))
    assert all(isinstance(error, NotSent) for error in results)


def test_send_messages_keeps_djangos_contract(settings):
    with SmtpServer(pipelining=True) as server:
        backend = backend_for(server)
        assert backend.send_messages(messages("a@x.com.br", "b@x.com.br")) == 2
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            backend.send_messages(messages("reject@x.com.br", "c@x.com.br"))
        backend.fail_silently = True
        assert backend.send_messages(messages("reject@x.com.br", "d@x.com.br")) == 1
        backend.close()
    assert server.sink.recipients() == ["a@x.com.br", "b@x.com.br", "c@x.com.br", "d@x.com.br"]
