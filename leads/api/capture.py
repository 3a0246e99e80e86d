"""The public door: ``POST /api/v1/forms/<slug>/submissions/``, no login.

Every submission is stored raw first and processed in the same request and the same
transaction (``services.submission_receive``: a processing failure still commits the
raw submission with its error). The answer never says whether the email was already
known.
"""

import re

from django.conf import settings
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.translation import gettext, gettext_noop
from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ParseError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import services
from ..models import Form, Submission
from ..selectors import form_for_capture
from .throttles import CaptureThrottle, client_ident

FORM_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class SubmissionInputSerializer(serializers.Serializer):
    """The fields a form may post. Which are accepted and required is set per form;
    other keys the form allows become custom fields of the lead."""

    email = serializers.CharField(required=False, allow_blank=True, max_length=254)
    name = serializers.CharField(required=False, allow_blank=True, max_length=250)
    first_name = serializers.CharField(required=False, allow_blank=True, max_length=100)
    last_name = serializers.CharField(required=False, allow_blank=True, max_length=150)
    phone = serializers.CharField(required=False, allow_blank=True, max_length=40)
    company = serializers.CharField(required=False, allow_blank=True, max_length=200)
    job_title = serializers.CharField(required=False, allow_blank=True, max_length=150)
    company_size = serializers.CharField(required=False, allow_blank=True, max_length=20)
    country = serializers.CharField(required=False, allow_blank=True, max_length=2)
    state = serializers.CharField(required=False, allow_blank=True, max_length=40)
    city = serializers.CharField(required=False, allow_blank=True, max_length=150)
    interest = serializers.CharField(required=False, allow_blank=True, max_length=255)
    budget = serializers.CharField(required=False, allow_blank=True, max_length=40)
    message = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    consent = serializers.BooleanField(required=False)
    utm_source = serializers.CharField(required=False, allow_blank=True, max_length=150)
    utm_medium = serializers.CharField(required=False, allow_blank=True, max_length=150)
    utm_campaign = serializers.CharField(required=False, allow_blank=True, max_length=150)
    utm_term = serializers.CharField(required=False, allow_blank=True, max_length=150)
    utm_content = serializers.CharField(required=False, allow_blank=True, max_length=150)


ERRORS_SCHEMA = inline_serializer(
    "SubmissionErrors",
    {"errors": serializers.DictField(child=serializers.ListField(child=serializers.CharField()))},
)


class FormSubmissionView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [CaptureThrottle]
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema(
        operation_id="forms_submissions_create",
        request={
            "application/json": SubmissionInputSerializer,
            "application/x-www-form-urlencoded": SubmissionInputSerializer,
            "multipart/form-data": SubmissionInputSerializer,
        },
        parameters=[
            OpenApiParameter(
                "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
                description="A retried POST with the same key gets the first answer and creates nothing.",
            ),
        ],
        responses={
            202: inline_serializer("SubmissionAccepted", {"submission": serializers.UUIDField()}),
            303: OpenApiResponse(description="Plain HTML form post: redirect to the form's success page."),
            400: ERRORS_SCHEMA,
            403: OpenApiResponse(description="The page's origin may not post to this form."),
            404: OpenApiResponse(description="No active form with this slug."),
            413: OpenApiResponse(description="The body is too large."),
            429: OpenApiResponse(description="Too many submissions; see Retry-After."),
        },
        auth=[],
        tags=["capture"],
    )
    def post(self, request, slug):
        form = form_for_capture(slug)
        if form is None:
            raise Http404
        origin = request.headers.get("Origin", "")
        if origin and not form.allows_origin(origin):
            return Response({"detail": "This site may not post to this form."}, status=status.HTTP_403_FORBIDDEN)
        if _content_length(request) > settings.FUNIL_CAPTURE_MAX_BODY_BYTES:
            return Response({"detail": "The submission is too large."}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        malformed = None
        try:
            payload = _payload(request)
        except ParseError as exc:
            malformed = str(exc.detail)
            payload = {"_raw": request.body.decode("utf-8", errors="replace")[:10000]}
        submission, _stored_now = services.submission_receive(
            form=form, payload=_storable(payload), content_type=request.content_type or "", ip=_client_ip(request),
            user_agent=request.headers.get("User-Agent", ""), referrer=request.headers.get("Referer", ""),
            origin=origin, idempotency_key=(request.headers.get("Idempotency-Key") or "").strip()[:255] or None,
            malformed=malformed,
        )
        return self._answer(request, form, submission)

    def _answer(self, request, form, submission):
        wants_html = _is_browser_form_post(request)
        if submission.status == Submission.Status.INVALID:
            # Stored as written (English); said in the request's language.
            errors = {field: [error_text(item) for item in ([message] if isinstance(message, str) else message)]
                      for field, message in submission.errors.items()}
            if wants_html:
                rows = [(field_label(field), messages) for field, messages in errors.items()]
                return render(request._request, "leads/form_errors.html",
                              {"form": form, "errors": rows, "sender_name": settings.FUNIL_SENDER_NAME}, status=400)
            return Response({"errors": errors}, status=status.HTTP_400_BAD_REQUEST)
        # Processed, spam, or kept for a replay: the sender sees the same success.
        if wants_html:
            target = form.success_url or reverse("form-thanks", args=[form.slug])
            return HttpResponseRedirect(target, status=303)
        return Response({"submission": str(submission.public_id)}, status=status.HTTP_202_ACCEPTED)


def form_thanks(request, slug):
    form = get_object_or_404(Form, slug=slug)
    return render(request, "leads/form_thanks.html", {"form": form, "sender_name": settings.FUNIL_SENDER_NAME})


def _payload(request):
    data = request.data
    if hasattr(data, "lists"):
        return {key: values[-1] if len(values) == 1 else values for key, values in data.lists()
                if not hasattr(values[-1], "read")}
    if not isinstance(data, dict):
        raise ParseError("The body must be a JSON object.")
    return data


def _storable(value):
    """The payload as a database can keep it: NUL characters (PostgreSQL refuses them in
    text and JSON) and unpaired surrogates become U+FFFD, keys become strings."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_storable(str(key)): _storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    return value


def _content_length(request):
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _client_ip(request):
    # The same address the throttle counts.
    return client_ident(request) or None


def _is_browser_form_post(request):
    content_type = (request.content_type or "").split(";")[0].strip()
    return content_type in FORM_CONTENT_TYPES and "application/json" not in request.headers.get("Accept", "")


# What capture (leads/capture.py, leads/normalize.py) writes on a submission, listed for the
# translators: the submission keeps the English text, ``error_text`` says it in the reader's.
_CAPTURE_MESSAGES = (
    gettext_noop("Expected a single value."),
    gettext_noop("Enter the two-letter country code, e.g. BR."),
    gettext_noop("Consent is required."),
    gettext_noop("This field is required."),
    gettext_noop("Enter an email address or a phone number."),
    gettext_noop("Enter a valid email address."),
    gettext_noop("Enter a valid phone number."),
    gettext_noop("Enter the state as its two-letter code."),
    gettext_noop("Enter a Brazilian state (UF code or name)."),
    gettext_noop("The budget cannot be negative."),
    gettext_noop("The budget is too large."),
    gettext_noop("Enter an amount, e.g. 5000, 5.000,00 or 5k."),
    gettext_noop("Enter the number of employees, e.g. 50 or 51-200."),
    gettext_noop("The body must be a JSON object."),
)
_TOO_LONG = re.compile(r"Ensure this field has no more than (\d+) characters\.")


def error_text(message):
    """A stored capture error in the active language (unknown text is shown as it is)."""
    match = _TOO_LONG.fullmatch(str(message))
    if match:
        return gettext("Ensure this field has no more than %(limit)s characters.") % {"limit": match.group(1)}
    return gettext(str(message))


def field_label(name):
    """A posted field's name as the person filling the form knows it: the posted keys that
    are no lead field by their own words, the others as the rules say a field."""
    from scoring.labels import field_label as lead_field_label

    special = {"name": _("Name"), "consent": _("Consent"), "_raw": _("Form")}
    if name in special:
        return special[name]
    return lead_field_label(name)
