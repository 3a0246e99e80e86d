import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
application = get_wsgi_application()

# Import every view and build the URL resolver now, before gunicorn forks its workers
# (or at least before the first request), instead of inside the first request each
# worker serves.
from django.urls import get_resolver  # noqa: E402

get_resolver().reverse_dict  # noqa: B018 - the property builds the resolver
