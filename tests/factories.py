"""factory-boy factories. Leads are built through the services, as users create them."""

import factory
from django.contrib.auth import get_user_model

from leads import services
from leads.models import Form, Lead, Reason, Source


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("secret-pass-123")


class SourceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Source
        django_get_or_create = ["slug"]

    slug = "site"
    name = "Site"
    channel = Source.Channel.CONTACT_FORM


class FormFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Form
        django_get_or_create = ["slug"]

    slug = "contato"
    name = "Contato"
    source = factory.SubFactory(SourceFactory)


class ReasonFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Reason
        django_get_or_create = ["slug"]

    slug = "no_budget"
    label = "Sem orçamento agora"
    kind = Reason.Kind.BOTH


class LeadFactory(factory.Factory):
    """Creates through ``leads.services.lead_create`` so the timeline is real."""

    class Meta:
        model = Lead

    email = factory.Sequence(lambda n: f"lead{n}@empresa.com.br")
    first_name = "Ana"
    last_name = factory.Sequence(lambda n: f"Souza {n}")
    company = "Paletes Ltda"
    state = "SP"
    interest = "paletes PBR"

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return services.lead_create(**kwargs)
