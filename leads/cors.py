"""CORS for the public form endpoint: each form lists the sites that may post to it."""

import re

from .selectors import form_for_capture

_SUBMISSIONS_PATH = re.compile(r"^/api/v1/forms/(?P<slug>[-\w]+)/submissions/$")


def allow_form_origin(sender, request, **kwargs):
    """django-cors-headers asks this for every request to the endpoint."""
    match = _SUBMISSIONS_PATH.match(request.path_info)
    origin = request.headers.get("Origin")
    if not match or not origin:
        return False
    form = form_for_capture(match["slug"])
    return form is not None and form.allows_origin(origin)
