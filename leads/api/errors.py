"""Errors of the authenticated API, one shape for all of them.

- 400: ``{"errors": {"<field>": ["<message>", ...]}}``, naming each wrong field
  (``non_field_errors`` when no single field is at fault). Services' Django
  ``ValidationError``, serializer and filter errors, malformed JSON and bad cursors
  all answer this way.
- 401, 403, 404, 409: ``{"detail": "<message>"}``.
"""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import JsonResponse
from django.views import defaults
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler


class ErrorsSerializer(serializers.Serializer):
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Messages by field name; ``non_field_errors`` for the request as a whole.",
    )


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField()


def api_exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(error_dict(exc.message_dict if hasattr(exc, "error_dict") else exc.messages))
    response = exception_handler(exc, context)
    if response is not None and isinstance(exc, (exceptions.ValidationError, exceptions.ParseError)):
        response.data = {"errors": error_dict(exc.detail)}
    return response


class ErrorHandlingMixin:
    """Use ``api_exception_handler`` in this view (without changing the project's
    REST_FRAMEWORK settings, which the public endpoint shares)."""

    def get_exception_handler(self):
        return api_exception_handler


def error_dict(detail):
    """Any error detail -> ``{field: [message, ...]}`` of plain strings."""
    if isinstance(detail, dict):
        return {
            api_settings.NON_FIELD_ERRORS_KEY if key == "__all__" else str(key): _messages(value)
            for key, value in detail.items()
        }
    return {api_settings.NON_FIELD_ERRORS_KEY: _messages(detail)}


def _messages(value):
    if isinstance(value, dict):
        return [f"{key}: {message}" for key, item in value.items() for message in _messages(item)]
    if isinstance(value, (list, tuple)):
        return [message for item in value for message in _messages(item)]
    return [str(value)]


BAD_REQUEST = OpenApiResponse(ErrorsSerializer, description="Invalid input: each wrong field and why.")
UNAUTHENTICATED = OpenApiResponse(DetailSerializer, description="No valid token or session.")
FORBIDDEN = OpenApiResponse(DetailSerializer, description="Your role may not do this (to this lead).")
NOT_FOUND = OpenApiResponse(DetailSerializer, description="Not found.")


def responses(ok, *, bad_request=True, not_found=False, extra=None):
    """The responses of an operation: ``ok`` (a dict of status -> schema), plus the
    errors every authenticated operation may answer."""
    result = {**ok, 401: UNAUTHENTICATED, 403: FORBIDDEN}
    if bad_request:
        result[400] = BAD_REQUEST
    if not_found:
        result[404] = NOT_FOUND
    result.update(extra or {})
    return result


API_PREFIX = "/api/"


def not_found(request, exception=None):
    """The project's 404 handler: under /api/ a JSON ``{"detail": ...}`` like every other
    API error (also for a path no route matches, e.g. a lead id that is not a number);
    elsewhere Django's page."""
    if request.path.startswith(API_PREFIX):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    """The project's 500 handler: JSON under /api/, Django's page elsewhere."""
    if request.path.startswith(API_PREFIX):
        return JsonResponse({"detail": "Server error."}, status=500)
    return defaults.server_error(request)
