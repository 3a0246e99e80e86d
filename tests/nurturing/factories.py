"""Nurturing data built the way a marketer builds it in admin."""

from nurturing.models import EmailTemplate, Segment, Sequence, SequenceStep

HTML = """<html><body><p>Olá {{ lead.first_name }},</p>
<p>Novidades para a {{ lead.company }}: <a href="https://example.com/paletes?x=1&amp;y=2">veja os paletes</a>.</p>
<ul><li>PBR</li><li>Sob medida</li></ul></body></html>"""


def template(name="Boas-vindas", subject="Olá {{ lead.first_name }}", html=HTML, text="", language="pt-br"):
    return EmailTemplate.objects.create(name=name, subject=subject, html_body=html, text_body=text, language=language)


def disqualified_segment(slug="sem-orcamento"):
    return Segment.objects.create(name=slug, slug=slug, filters={"status": ["disqualified"]})


def sequence(*, steps=((0, 0),), segment=None, active=True, all_week=True, **values):
    """A sequence with one step per (delay_days, delay_hours); all_week: a window open day and night."""
    window = {"send_days": [0, 1, 2, 3, 4, 5, 6], "send_from_hour": 0, "send_until_hour": 24} if all_week else {}
    seq = Sequence.objects.create(name=values.pop("name", "Nutrição"), slug=values.pop("slug", "nutricao"),
                                  segment=segment, active=active, **window, **values)
    for position, (days, hours) in enumerate(steps, start=1):
        SequenceStep.objects.create(sequence=seq, position=position, delay_days=days, delay_hours=hours,
                                    template=template(name=f"{seq.slug} {position}",
                                                      subject=f"Passo {position}: {{{{ lead.first_name }}}}"))
    return seq
