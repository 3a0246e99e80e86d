"""Rendering a nurture email: the marketer's template for one lead, the text part
derived from the HTML when empty, tracked links, the open pixel, the footer and the
compliance headers (List-Unsubscribe with an https URL and a mailto, RFC 8058 one-click)."""

import functools
import html
import re
import uuid
from email.utils import make_msgid, parseaddr
from html.parser import HTMLParser
from urllib.parse import quote, unquote

from django.conf import settings
from django.core import signing
from django.core.mail import EmailMultiAlternatives
from django.template import Context, Template
from django.template.loader import get_template
from django.urls import reverse
from django.utils import translation

UNSUBSCRIBE_SALT = "nurturing.unsubscribe"
CLICK_SALT = "nurturing.click"
OPEN_SALT = "nurturing.open"

# --- HTML to text ---------------------------------------------------------------------

_BLOCK_TAGS = {"p", "div", "br", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table", "hr", "blockquote"}


class _TextExtractor(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts = []
        self.skip = 0
        self.links = []

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "head", "title"):
            self.skip += 1
        elif tag == "li":
            self.parts.append("\n* ")
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")
        if tag == "a":
            self.links.append(dict(attrs).get("href") or "")

    def handle_endtag(self, tag):
        if tag in ("script", "style", "head", "title"):
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK_TAGS or tag == "li":
            self.parts.append("\n")
        if tag == "a" and self.links:
            href = self.links.pop()
            if href.startswith(("http://", "https://")):
                self.parts.append(f" ({href})")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(source):
    """A readable plain-text version of an HTML email: paragraphs, list items, link targets."""
    parser = _TextExtractor()
    parser.feed(source)
    parser.close()
    text = "".join(parser.parts)
    lines = [line.strip() for line in text.splitlines()]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


# --- Tokens and URLs ------------------------------------------------------------------


def absolute(path):
    return settings.FUNIL_BASE_URL.rstrip("/") + path


@functools.lru_cache(maxsize=16)
def _path_with(name, placeholder="TOKEN"):
    return reverse(name, args=[placeholder])


def _token_url(name, token):
    return absolute(_path_with(name).replace("TOKEN", token))


def unsubscribe_token(*, lead_id, delivery_id=None):
    return signing.dumps({"l": lead_id, "d": delivery_id}, salt=UNSUBSCRIBE_SALT, compress=True)


def read_unsubscribe_token(token):
    """(lead_id, delivery_id) or raise signing.BadSignature."""
    data = signing.loads(token, salt=UNSUBSCRIBE_SALT)
    return int(data["l"]), (int(data["d"]) if data.get("d") is not None else None)


def unsubscribe_url(token):
    return _token_url("nurturing:unsubscribe", token)


def unsubscribe_mailto(token):
    return f"mailto:{unsubscribe_mailbox()}?subject={quote('unsubscribe ' + token)}"


def unsubscribe_mailbox():
    """The address of List-Unsubscribe's mailto: FUNIL_UNSUBSCRIBE_MAILTO, or else
    ``unsubscribe@`` the sender's domain."""
    configured = getattr(settings, "FUNIL_UNSUBSCRIBE_MAILTO", "")
    if configured:
        return parseaddr(configured)[1] or configured
    _, address = parseaddr(settings.DEFAULT_FROM_EMAIL)
    domain = address.rpartition("@")[2] or "localhost"
    return f"unsubscribe@{domain}"


# What ``signing.dumps`` writes: [.]payload:timestamp:signature (URL-safe base64, base62).
_TOKEN = r"\.?[A-Za-z0-9_-]+:[A-Za-z0-9]+:[A-Za-z0-9_-]+"
# "unsubscribe <token>" anywhere in the line, whatever precedes it (Re:, Fwd:, RES:, ENC: …).
_KEYWORD_AND_TOKEN = re.compile(r"unsubscribe[\s:]*(" + _TOKEN + ")", re.IGNORECASE)
# A line that is only the token, after any reply or forward prefixes.
_BARE_TOKEN = re.compile(r"(?:(?:re|res|fwd?|enc|tr|aw|wg|sv|vs|rv)\s*(?:\[\d+\])?\s*:\s*)*(" + _TOKEN + ")",
                         re.IGNORECASE)


def mailto_unsubscribe_tokens(*, subject, text):
    """The candidate unsubscribe tokens of a message sent to the unsubscribe mailbox, not
    yet verified: from the subject (what ``unsubscribe_mailto`` asks for), then from the
    first non-blank line of the text body. Tolerates reply/forward prefixes, extra spaces,
    the keyword in any case and a subject left percent-encoded by the mail client."""
    first_line = next((line for line in (text or "").splitlines() if line.strip()), "")
    tokens = []
    for line in (subject or "", first_line):
        line = " ".join(unquote(line).replace("+", " ").split())
        match = _KEYWORD_AND_TOKEN.search(line) or _BARE_TOKEN.fullmatch(line.rstrip("."))
        if match and match.group(1) not in tokens:
            tokens.append(match.group(1))
    return tokens


def click_url(*, delivery_id, url):
    token = signing.dumps({"d": delivery_id, "u": url}, salt=CLICK_SALT, compress=True)
    return _token_url("nurturing:click", token)


def read_click_token(token):
    data = signing.loads(token, salt=CLICK_SALT)
    url = str(data["u"])
    if not url.startswith(("http://", "https://")):
        raise signing.BadSignature("not a web link")
    return int(data["d"]), url


def open_url(*, delivery_id):
    token = signing.dumps(delivery_id, salt=OPEN_SALT)
    return _token_url("nurturing:open", token)


def read_open_token(token):
    return int(signing.loads(token, salt=OPEN_SALT))


_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"']+)\2""", re.IGNORECASE)


def track_links(source, *, delivery_id):
    """Point every web link of the HTML at the signed click redirect of this delivery."""

    def replace(match):
        target = html.unescape(match.group(3))
        return f"{match.group(1)}{match.group(2)}{html.escape(click_url(delivery_id=delivery_id, url=target))}" \
               f"{match.group(2)}"

    return _HREF.sub(replace, source)


# --- Rendering ------------------------------------------------------------------------

class CompiledTemplate:
    """An email template's parts compiled once, and the footer templates fetched once:
    the dispatcher builds one per step per batch and renders every message with it."""

    def __init__(self, template):
        self.template = template
        self.subject = Template(template.subject)
        self.html_body = Template(template.html_body)
        self.text_body = Template(template.text_body) if template.text_body.strip() else None
        self.footer_html = get_template("emails/nurture-footer.html")
        self.footer_text = get_template("emails/nurture-footer.txt")

    def render(self, *, lead, unsubscribe):
        """(subject, html, text) for ``lead``."""
        context = Context(template_context(lead=lead, unsubscribe=unsubscribe), autoescape=True)
        subject = " ".join(self.subject.render(context).split())
        body_html = self.html_body.render(context)
        if self.text_body is not None:
            text_context = Context(template_context(lead=lead, unsubscribe=unsubscribe), autoescape=False)
            body_text = self.text_body.render(text_context)
        else:
            body_text = html_to_text(body_html)
        return subject, body_html, body_text

    def footer(self, unsubscribe):
        context = {
            "sender_name": settings.FUNIL_SENDER_NAME, "sender_address": settings.FUNIL_SENDER_ADDRESS,
            "unsubscribe_url": unsubscribe,
        }
        # In the email's language, whatever the language of the request or worker that sends it.
        with translation.override(self.template.language or settings.LANGUAGE_CODE):
            return self.footer_html.render(context), self.footer_text.render(context)


def template_context(*, lead, unsubscribe):
    return {
        "lead": lead,
        "unsubscribe_url": unsubscribe,
        "sender_name": settings.FUNIL_SENDER_NAME,
        "sender_address": settings.FUNIL_SENDER_ADDRESS,
    }


def render_parts(template, *, lead, unsubscribe):
    """(subject, html, text) of ``template`` for ``lead``; raises TemplateSyntaxError on a broken template."""
    return CompiledTemplate(template).render(lead=lead, unsubscribe=unsubscribe)


def _append_to_body(source, extra):
    index = source.lower().rfind("</body>")
    return source + extra if index < 0 else source[:index] + extra + source[index:]


class NurtureEmail(EmailMultiAlternatives):
    """An EmailMultiAlternatives whose MIME boundary is chosen up front: a random 128-bit
    token cannot occur in the body, and the standard library's generator, left to pick
    one, compiles a new regular expression per message to prove that."""

    def message(self):
        message = super().message()
        if message.is_multipart():
            message.set_boundary(f"=_funil_{uuid.uuid4().hex}")
        return message


def message_domain():
    _, address = parseaddr(settings.DEFAULT_FROM_EMAIL)
    return address.rpartition("@")[2] or "localhost"


def build_message(*, template, lead, to, delivery_id=None, connection=None, track=True, compiled=None):
    """The EmailMultiAlternatives of one nurture email, and its Message-ID.

    ``delivery_id`` None is a preview or test send: links are not tracked, no pixel.
    ``compiled``: the template's CompiledTemplate, when many messages share it; raises
    TemplateSyntaxError on a broken template."""
    compiled = compiled or CompiledTemplate(template)
    token = unsubscribe_token(lead_id=lead.pk, delivery_id=delivery_id)
    unsubscribe = unsubscribe_url(token)
    subject, body_html, body_text = compiled.render(lead=lead, unsubscribe=unsubscribe)
    footer_html, footer_text = compiled.footer(unsubscribe)
    if track and delivery_id is not None:
        body_html = track_links(body_html, delivery_id=delivery_id)
        footer_html += f'<img src="{html.escape(open_url(delivery_id=delivery_id))}" width="1" height="1" alt="">'
    body_html = _append_to_body(body_html, footer_html)
    body_text = body_text.rstrip("\n") + "\n\n" + footer_text
    message_id = make_msgid(domain=message_domain())
    headers = {
        "Message-ID": message_id,
        "List-Unsubscribe": f"<{unsubscribe}>, <{unsubscribe_mailto(token)}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    message = NurtureEmail(subject, body_text, to=[to], headers=headers, connection=connection)
    message.attach_alternative(body_html, "text/html")
    return message, message_id
