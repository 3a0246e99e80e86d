from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.utils.translation import gettext_lazy as _
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from leads.api.capture import FormSubmissionView, form_thanks

from .api import router
from .health import healthz

# JSON errors under /api/, Django's pages elsewhere.
handler404 = "leads.api.errors.not_found"
handler500 = "leads.api.errors.server_error"

# The marketers' admin is Funil's, not "Django administration".
admin.site.site_header = _("Funil administration")
admin.site.site_title = "Funil"
admin.site.index_title = _("Rules, forms, sequences and imports")

def favicon(request):
    """The icon's hashed static address, looked up when asked (not at import, before
    ``collectstatic`` has written the manifest)."""
    from django.shortcuts import redirect
    from django.templatetags.static import static

    return redirect(static("favicon.svg"))


urlpatterns = [
    path("", RedirectView.as_view(pattern_name="leads:inbox", permanent=False)),
    # Browsers ask for /favicon.ico on pages that name no icon (admin, JSON, the unsubscribe page).
    path("favicon.ico", favicon),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password_reset/", auth_views.PasswordResetView.as_view(), name="password_reset"),
    path("accounts/password_reset/done/", auth_views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path("accounts/reset/<uidb64>/<token>/", auth_views.PasswordResetConfirmView.as_view(),
         name="password_reset_confirm"),
    path("accounts/reset/done/", auth_views.PasswordResetCompleteView.as_view(), name="password_reset_complete"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/v1/forms/<slug:slug>/submissions/", FormSubmissionView.as_view(), name="form-submissions"),
    path("api/v1/", include(router.urls)),
    path("f/<slug:slug>/thanks/", form_thanks, name="form-thanks"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("healthz/", healthz, name="healthz"),
    # Before leads/: its /leads/<id>/privacy/ etc. must not fall into leads:action.
    path("", include("leads.urls_insights")),
    path("leads/", include("leads.urls")),
    # Nurture email links (/n/u/, /n/o/, /n/c/) and the enroll/remove form posts (/nurturing/...).
    path("", include("nurturing.urls")),
    # Provider webhooks (anymail): /anymail/<provider>/tracking/ (bounces, complaints) and
    # /anymail/<provider>/inbound/ (mail to the unsubscribe mailbox).
    path("anymail/", include("anymail.urls")),
]
