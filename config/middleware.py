from django.http import JsonResponse

from .db import database_unavailable


class DatabaseUnavailableMiddleware:
    """While the database is unreachable (restarting, failing over), answer 503 with
    Retry-After rather than a 500, so clients retry and nothing is lost."""

    RETRY_AFTER_SECONDS = 5

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if database_unavailable(exception):
            response = JsonResponse(
                {"detail": "The service is briefly unavailable; please retry."}, status=503
            )
            response["Retry-After"] = str(self.RETRY_AFTER_SECONDS)
            return response
        return None
