"""The demo: a wooden-pallet maker that serves only São Paulo state (DOMAIN.md).

Safe to run again: the catalogue, the users and the ruleset are created when missing
and left alone when present; the demo leads are loaded once (a second run finds them
and says so). Leads arrive the way real ones do, as form submissions through the same
services as the public endpoint, so their scores, explanations and timelines are real;
then the demo's reps work some of them through the lead services.
"""

import datetime
import json
import random
import unicodedata
from decimal import Decimal
from pathlib import Path

from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from leads import roles, services
from leads.models import (
    Fit,
    Form,
    Lead,
    LeadEvent,
    LeadStatus,
    Product,
    Reason,
    ServiceArea,
    Source,
    SpendRecord,
    Submission,
)
from scoring.models import RescoreJob, Ruleset
from scoring.rules_io import ruleset_import
from scoring.services import rescore_job_run, ruleset_activate

RULES_FILE = Path(__file__).resolve().parents[2] / "demo" / "paletes-sp.rules.json"
DEMO_PASSWORD = "funil-demo"
LEAD_COUNT = 200

USERS = [
    # username, first name, last name, group (None: superuser)
    ("admin", "Admin", "Funil", None),
    ("marketing", "Marina", "Costa", roles.MARKETING),
    ("gerente", "Gustavo", "Pereira", roles.SALES_MANAGERS),
    ("ana", "Ana", "Ribeiro", roles.SALES),
    ("bruno", "Bruno", "Almeida", roles.SALES),
]

SOURCES = [
    ("site", "Site: fale conosco", Source.Channel.CONTACT_FORM),
    ("newsletter", "Newsletter", Source.Channel.NEWSLETTER),
    ("ebook", "E-book: guia de paletes", Source.Channel.CONTENT_DOWNLOAD),
    ("instagram", "Instagram Ads", Source.Channel.SOCIAL),
]

PRODUCTS = [
    ("palete-pbr", "Palete PBR 1,00 × 1,20 m", "palete pbr, pbr, palete padrão"),
    ("palete-sob-medida", "Palete sob medida", "sob medida, palete especial, palete personalizado"),
    ("palete-descartavel", "Palete descartável (one-way)", "descartável, one-way, exportação"),
    ("palete-tratado", "Palete com tratamento fitossanitário (HT)", "tratado, ht, ispm 15, fitossanitário"),
]

REASONS = [
    ("no_immediate_need", "Sem necessidade imediata", Reason.Kind.DISQUALIFIED),
    ("wrong_product_line", "Linha de produto diferente", Reason.Kind.DISQUALIFIED),
    ("no_contact", "Não respondeu aos contatos", Reason.Kind.DISQUALIFIED),
    ("competitor", "Concorrente", Reason.Kind.OUT_OF_FOCUS),
    # The rules' own reason (scoring creates it when missing): in the demo company's language.
    ("below_threshold", "Abaixo da pontuação mínima", Reason.Kind.DISQUALIFIED),
]

CONSENT_TEXT = "Aceito receber contatos e conteúdos da Paletes Bandeirantes por e-mail e telefone."

FORMS = [
    dict(slug="contato", name="Fale conosco", source="site", default_interest="",
         fields=["name", "email", "phone", "company", "job_title", "company_size", "state", "city", "interest",
                 "budget", "message", "consent", "utm_source", "utm_medium", "utm_campaign"],
         required_fields=["name", "email", "interest"], consent_required=False),
    dict(slug="orcamento", name="Peça um orçamento", source="instagram", default_interest="palete PBR",
         fields=["name", "email", "phone", "company", "job_title", "company_size", "state", "city", "interest",
                 "budget", "consent", "utm_source", "utm_medium", "utm_campaign", "quantidade"],
         required_fields=["name", "email", "phone"], consent_required=True),
    dict(slug="newsletter", name="Assine a newsletter", source="newsletter", default_interest="conteúdo sobre paletes",
         fields=["name", "email", "consent", "utm_source", "utm_medium", "utm_campaign"],
         required_fields=["email"], consent_required=True,
         thank_you_message="Inscrição confirmada! A próxima edição da newsletter chega no seu e-mail."),
    dict(slug="ebook-paletes", name="E-book: como escolher paletes", source="ebook",
         default_interest="e-book sobre paletes",
         fields=["name", "email", "company", "job_title", "company_size", "state", "consent"],
         required_fields=["name", "email"], consent_required=True,
         thank_you_message="Pronto! O e-book “Como escolher paletes” está a caminho do seu e-mail."),
]

FIRST_NAMES = [
    "Ana", "Beatriz", "Camila", "Daniela", "Eduarda", "Fernanda", "Gabriela", "Helena", "Isabela", "Juliana",
    "Larissa", "Mariana", "Natália", "Patrícia", "Renata", "Sofia", "Tatiane", "Vanessa", "André", "Bruno",
    "Carlos", "Diego", "Eduardo", "Felipe", "Gustavo", "Henrique", "Igor", "João", "Lucas", "Marcelo",
    "Otávio", "Paulo", "Rafael", "Rodrigo", "Thiago", "Vinícius", "Wagner", "Zeca",
]
LAST_NAMES = [
    "Silva", "Santos", "Oliveira", "Souza", "Rodrigues", "Ferreira", "Alves", "Pereira", "Lima", "Gomes",
    "Costa", "Ribeiro", "Martins", "Carvalho", "Araújo", "Melo", "Barbosa", "Cardoso", "Teixeira", "Moreira",
]
COMPANY_WORDS = [
    "Logística", "Alimentos", "Bebidas", "Metalúrgica", "Embalagens", "Química", "Têxtil", "Autopeças",
    "Farmacêutica", "Cosméticos", "Distribuidora", "Atacadista", "Transportes", "Cerâmica", "Agro",
]
COMPANY_PREFIXES = ["Nova", "Grupo", "Irmãos", "Real", "Paulista", "Horizonte", "Central", "Vale", "Prime"]
SP_CITIES = [
    "São Paulo", "Campinas", "Guarulhos", "São Bernardo do Campo", "Santo André", "Osasco", "Sorocaba",
    "Ribeirão Preto", "São José dos Campos", "Jundiaí", "Piracicaba", "Bauru", "Santos", "Limeira",
]
OTHER_PLACES = [
    ("RJ", "Rio de Janeiro"), ("MG", "Belo Horizonte"), ("PR", "Curitiba"), ("RS", "Porto Alegre"),
    ("BA", "Salvador"), ("PE", "Recife"), ("SC", "Joinville"), ("GO", "Goiânia"), ("AM", "Manaus"),
]
TITLES_DECISION = ["Diretor de Operações", "Gerente de Logística", "Sócio-proprietário", "CEO",
                   "Gerente de Compras", "Comprador", "Diretora Industrial"]
TITLES_OTHER = ["Analista de Logística", "Assistente Administrativo", "Coordenador de Expedição",
                "Supervisor de Armazém", "Auxiliar de Compras"]
PALLET_INTERESTS = ["palete PBR", "paletes PBR para armazém", "palete sob medida para exportação",
                    "paletes descartáveis", "palete tratado HT (ISPM 15)", "reforma de paletes",
                    "paletes de madeira para estoque"]
OFF_FOCUS_INTERESTS = ["manutenção de elevadores", "calça jeans em promoção", "caixas de papelão",
                       "manutenção de equipamentos industriais", "móveis de pallet para decoração"]
CAMPAIGNS = ["paletes-pbr-2026", "black-friday", "exportacao-ht", ""]
FREE_MAIL = ["gmail.com", "hotmail.com", "outlook.com", "yahoo.com.br"]
NOTES = [
    "Liguei, pediu proposta para 300 paletes por mês.",
    "Cliente quer visita técnica na próxima semana.",
    "Enviei tabela de preços por e-mail.",
    "Comparando com o fornecedor atual; retomar em 15 dias.",
]


class Command(BaseCommand):
    help = (
        "Load the demo: a wooden-pallet maker serving only São Paulo state, its catalogue, rules, forms, "
        f"users (password '{DEMO_PASSWORD}') and about {LEAD_COUNT} pt-BR leads with timelines. Safe to run again."
    )

    def add_arguments(self, parser):
        parser.add_argument("--leads", type=int, default=LEAD_COUNT, help="How many demo leads to capture.")
        parser.add_argument("--seed", type=int, default=2026, help="Random seed, for a repeatable demo.")

    def handle(self, *args, leads, seed, **options):
        roles.sync_groups()
        users = self._users()
        sources = self._catalogue()
        forms = self._forms(sources)
        self._ruleset()
        self._spend(sources)
        self._nurture()
        if Lead.objects.filter(form__in=forms.values()).exists():
            self.stdout.write(f"Demo leads already loaded ({Lead.objects.count()} leads): left as they are.")
        else:
            self._leads(count=leads, rng=random.Random(seed), forms=forms, users=users)
        # What beat's refresh-rule-matches does every 10 minutes, now: the dashboard's rule
        # effectiveness has its figures from the first visit.
        from leads.reports import rule_matches_refresh

        rule_matches_refresh()
        self._summary()

    # --- the company ------------------------------------------------------------------------------
    def _users(self):
        users = {}
        for username, first, last, group in USERS:
            user, created = User.objects.get_or_create(
                username=username,
                defaults={"first_name": first, "last_name": last, "email": f"{username}@paletes.example.com",
                          "is_staff": group in (None, roles.MARKETING), "is_superuser": group is None},
            )
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save(update_fields=["password"])
                if group:
                    user.groups.add(Group.objects.get(name=group))
            users[username] = user
        return users

    def _catalogue(self):
        sources = {slug: services.source_ensure(slug=slug, name=name, channel=channel)
                   for slug, name, channel in SOURCES}
        for slug, name, keywords in PRODUCTS:
            Product.objects.get_or_create(slug=slug, defaults={"name": name, "keywords": keywords})
        ServiceArea.objects.get_or_create(country="BR", state="SP", city="", defaults={"name": "Estado de São Paulo"})
        for slug, label, kind in REASONS:
            Reason.objects.get_or_create(slug=slug, defaults={"label": label, "kind": kind})
        return sources

    def _forms(self, sources):
        forms = {}
        for spec in FORMS:
            spec = dict(spec)
            slug, source = spec.pop("slug"), sources[spec.pop("source")]
            existing = Form.objects.filter(slug=slug).first()
            if existing is None:
                consent = {"consent_text": CONSENT_TEXT, "consent_version": "2026-01"}
                existing = services.form_create(slug=slug, source=source, **consent, **spec)
            forms[slug] = existing
        return forms

    def _ruleset(self):
        data = json.loads(RULES_FILE.read_text(encoding="utf-8"))
        if Ruleset.objects.filter(name=data["name"]).exists():
            return
        with transaction.atomic():
            ruleset = ruleset_import(data)
            job = ruleset_activate(ruleset=ruleset)
        # Nothing to rescore yet; finish the job here so the demo does not wait for the worker.
        if RescoreJob.objects.filter(pk=job.pk, status=RescoreJob.Status.PENDING).exists():
            rescore_job_run(job_id=job.pk)
        self.stdout.write(f"Activated the ruleset {ruleset.name!r} from {RULES_FILE.name}.")

    def _spend(self, sources):
        """What marketing spent per source and month, for cost per lead and ROI."""
        today = timezone.localdate()
        monthly = {"instagram": Decimal("3500.00"), "site": Decimal("1200.00"), "ebook": Decimal("800.00"),
                   "newsletter": Decimal("300.00")}
        for back in range(5):
            month = (today.replace(day=1) - datetime.timedelta(days=31 * back)).replace(day=1)
            for slug, amount in monthly.items():
                SpendRecord.objects.get_or_create(month=month, source=sources[slug], utm_campaign="",
                                                  defaults={"amount": amount, "note": "demo"})

    def _nurture(self):
        """A three-step sequence for leads disqualified for lack of budget."""
        from nurturing.models import EmailTemplate, Segment, Sequence, SequenceStep

        if Sequence.objects.filter(slug="sem-orcamento").exists():
            return
        segment, _ = Segment.objects.get_or_create(
            slug="desqualificados-sem-orcamento",
            defaults={"name": "Desqualificados: sem orçamento", "filters": {"status": ["disqualified"],
                                                                            "reason": "no_budget"}},
        )
        sequence = Sequence.objects.create(name="Sem orçamento agora", slug="sem-orcamento", segment=segment,
                                           active=True, send_days=[0, 1, 2, 3, 4], send_from_hour=8,
                                           send_until_hour=18)
        steps = [
            (0, "Paletes PBR: quanto custa de verdade", "<p>Olá {{ lead.first_name }},</p><p>Preparamos um guia "
             "de custos de paletes PBR para a {{ lead.company }}: <a href=\"https://paletes.example.com/guia\">"
             "leia o guia</a>.</p>"),
            (7, "Como reformar paletes e gastar menos", "<p>{{ lead.first_name }}, a reforma de paletes custa "
             "até 60% menos: <a href=\"https://paletes.example.com/reforma\">veja como</a>.</p>"),
            (14, "Condições especiais para {{ lead.company }}", "<p>{{ lead.first_name }}, quando o orçamento "
             "permitir, temos parcelamento: <a href=\"https://paletes.example.com/orcamento\">peça um "
             "orçamento</a>.</p>"),
        ]
        for position, (days, subject, html) in enumerate(steps, start=1):
            template, _ = EmailTemplate.objects.get_or_create(name=f"Sem orçamento {position}",
                                                              defaults={"subject": subject, "html_body": html,
                                                                        "language": "pt-br"})
            SequenceStep.objects.create(sequence=sequence, position=position, template=template, delay_days=days)

    # --- the leads -------------------------------------------------------------------------------
    def _leads(self, *, count, rng, forms, users):
        now = timezone.now()
        reps = [users["ana"], users["bruno"]]
        manager = users["gerente"]
        reasons = {reason.slug: reason for reason in Reason.objects.all()}
        created = 0
        for number in range(count):
            form = forms[rng.choices(list(forms), weights=[45, 30, 10, 15])[0]]
            payload = self._payload(number, rng, form)
            submission, _ = services.submission_receive(
                form=form, payload=payload, content_type="application/json",
                ip=f"177.{number % 250}.10.{rng.randint(1, 250)}",
                user_agent="Mozilla/5.0 (demo)", referrer="https://paletes.example.com/",
            )
            if submission.status != Submission.Status.PROCESSED:
                continue
            created += 1
            lead = submission.lead
            age = datetime.timedelta(days=rng.uniform(0, 120), minutes=rng.randint(0, 600))
            self._backdate(lead, submission, age)
            self._work(lead, rng=rng, reps=reps, manager=manager, reasons=reasons, now=now, age=age)
            if number % 50 == 49:
                self.stdout.write(f"  {number + 1}/{count} demo submissions captured")
        # Contacts a rep typed in after a trade fair: entered by hand, not scored until the next
        # rescoring, so they stay "new" for now.
        for number in range(max(count // 40, 1)):
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            services.lead_create(
                actor=rng.choice(reps), first_name=first, last_name=last,
                email=_ascii(f"{first}.{last}.feira{number}@example.com.br"),
                company=f"{rng.choice(COMPANY_PREFIXES)} {rng.choice(COMPANY_WORDS)}", state="SP",
                city=rng.choice(SP_CITIES), interest="paletes (contato da feira)",
            )
            created += 1
        self.stdout.write(f"Captured {created} demo leads.")

    def _payload(self, number, rng, form):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        company = f"{rng.choice(COMPANY_PREFIXES)} {rng.choice(COMPANY_WORDS)}"
        domain = rng.choice(FREE_MAIL) if rng.random() < 0.3 else (
            _ascii(company.replace(" ", "")) + ".com.br"
        )
        local = _ascii(f"{first}.{last}")
        roll = rng.random()
        if roll < 0.62:
            state, city = "SP", rng.choice(SP_CITIES)
        elif roll < 0.85:
            state, city = rng.choice(OTHER_PLACES)
        else:
            state, city = "", ""
        interest = rng.choice(OFF_FOCUS_INTERESTS) if rng.random() < 0.14 else rng.choice(PALLET_INTERESTS)
        decision = rng.random() < 0.6
        budget = rng.choice([None, 2000, 8000, 12000, 25000, 25000, 60000, 150000])
        payload = {
            "name": f"{first} {last}",
            "email": f"{local}{number}@{domain}",
            "phone": f"(11) 9{rng.randint(6000, 9999)}-{rng.randint(1000, 9999)}",
            "company": company,
            "job_title": rng.choice(TITLES_DECISION if decision else TITLES_OTHER),
            "company_size": str(rng.choice([5, 12, 30, 60, 120, 400, 1500])),
            "state": state,
            "city": city,
            "interest": interest,
            "budget": f"R$ {budget:,.2f}".replace(",", "X").replace(".", ",").replace("X", ".") if budget else "",
            "message": "Gostaria de receber um orçamento." if rng.random() < 0.5 else "",
            "consent": "on" if rng.random() < 0.9 or form.consent_required else "",
            "utm_source": form.source.slug,
            "utm_medium": "cpc" if form.source.slug == "instagram" else "organic",
            "utm_campaign": rng.choice(CAMPAIGNS),
        }
        accepted = set(form.get_accepted_fields())
        return {key: value for key, value in payload.items() if key in accepted and value not in ("", None)}

    def _backdate(self, lead, submission, age):
        """Spread the demo over the last months, keeping every timestamp's order."""
        stamps = ["created_at", "qualified_at", "disqualified_at", "out_of_focus_at", "converted_at",
                  "last_activity_at"]
        lead.refresh_from_db()
        shifted = {name: getattr(lead, name) - age for name in stamps if getattr(lead, name)}
        Lead.objects.filter(pk=lead.pk).update(**shifted)
        for event in lead.events.all():
            LeadEvent.objects.filter(pk=event.pk).update(created_at=event.created_at - age)
        Submission.objects.filter(pk=submission.pk).update(
            received_at=submission.received_at - age,
            processed_at=(submission.processed_at - age) if submission.processed_at else None,
        )

    def _work(self, lead, *, rng, reps, manager, reasons, now, age):
        """What the demo's sales team did with the lead since it arrived."""
        lead.refresh_from_db()
        if lead.status != LeadStatus.QUALIFIED:
            return
        roll = rng.random()
        if roll < 0.25:
            return  # still unassigned: the inbox's work
        rep = rng.choice(reps)
        lead = services.lead_assign(lead=lead, owner=rep, actor=manager if roll < 0.5 else rep)
        if rng.random() < 0.6:
            services.lead_add_note(lead=lead, author=rep, text=rng.choice(NOTES))
        outcome = rng.random()
        if outcome < 0.25:
            services.lead_change_status(
                lead=lead, status=LeadStatus.CONVERTED, actor=rep,
                deal_value=Decimal(rng.choice([4800, 9600, 18000, 42000, 75000])),
            )
        elif outcome < 0.4:
            services.lead_change_status(
                lead=lead, status=LeadStatus.DISQUALIFIED, actor=rep,
                reason=reasons[rng.choice(["no_immediate_need", "no_contact", "wrong_product_line"])],
                note="Retomar mais tarde.", requalify_at=now + datetime.timedelta(days=rng.randint(-10, 60)),
            )
        if outcome < 0.25 or rng.random() < 0.3:
            fit = Fit.GOOD if outcome < 0.25 or rng.random() < 0.6 else Fit.BAD
            note = "" if fit == Fit.GOOD else rng.choice(["Só queria cotação de preço.", "Empresa pequena demais."])
            services.lead_rate(lead=Lead.objects.get(pk=lead.pk), actor=rep, fit=fit, note=note)
        # The work happened after the lead arrived, not today: shift it and its timestamps back.
        later = age * rng.uniform(0.2, 0.9)
        recent = lead.events.filter(created_at__gte=now - datetime.timedelta(minutes=5))
        for event in recent:
            LeadEvent.objects.filter(pk=event.pk).update(created_at=event.created_at - later)
        lead = Lead.objects.get(pk=lead.pk)
        stamps = ["first_touched_at", "converted_at", "disqualified_at", "last_activity_at", "fit_rated_at"]
        shifted = {name: getattr(lead, name) - later for name in stamps
                   if getattr(lead, name) and getattr(lead, name) >= now - datetime.timedelta(minutes=5)}
        Lead.objects.filter(pk=lead.pk).update(**shifted)

    def _summary(self):
        by_status = {status: Lead.objects.filter(status=status).count() for status in LeadStatus.values}
        by_temperature = {t: Lead.objects.filter(temperature=t).count() for t in ("hot", "warm", "cold")}
        self.stdout.write(f"Leads by status: {by_status}")
        self.stdout.write(f"Leads by temperature: {by_temperature}")
        self.stdout.write(f"Demo users (password '{DEMO_PASSWORD}'): "
                          + ", ".join(f"{name} ({group or 'superuser'})" for name, _, _, group in USERS))


def _ascii(text):
    """Lower-case ASCII for an email address: "Otávio" is "otavio", not "otvio"."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
