"""CORS for the public form endpoint: each form lists the sites that may post to it."""

import re

from .models import Form

_SUBMISSIONS_PATH = re.compile(r"^/api/v1/forms/(?P<slug>[-\w]+)/submissions/$")


def allow_form_origin(sender, request, **kwargs):
    """django-cors-headers asks this for every request to the endpoint."""
    match = _SUBMISSIONS_PATH.match(request.path_info)
    origin = request.headers.get("Origin")
    if not match or not origin:
        return False
    form = Form.objects.filter(slug=match["slug"], active=True).only("allowed_origins").first()
    return form is not None and form.allows_origin(origin)
