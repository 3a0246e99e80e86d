from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from leads.api.capture import FormSubmissionView, form_thanks

from .api import router
from .health import healthz

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="leads:inbox", permanent=False)),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/v1/forms/<slug:slug>/submissions/", FormSubmissionView.as_view(), name="form-submissions"),
    path("api/v1/", include(router.urls)),
    path("f/<slug:slug>/thanks/", form_thanks, name="form-thanks"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("healthz/", healthz, name="healthz"),
    path("leads/", include("leads.urls")),
    path("", include("leads.urls_insights")),
]
