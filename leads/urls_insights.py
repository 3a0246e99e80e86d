"""URLs of the dashboard and the lead's rights (included from config.urls at the root)."""

from django.urls import path

from . import dashboard, privacy_views

app_name = "insights"

urlpatterns = [
    path("dashboard/", dashboard.dashboard, name="dashboard"),
    path("dashboard/<slug:slug>.csv", dashboard.dashboard_csv, name="dashboard-csv"),
    path("leads/<int:pk>/privacy/", privacy_views.lead_privacy, name="lead-privacy"),
    path("leads/<int:pk>/export/", privacy_views.lead_export, name="lead-export"),
    path("leads/<int:pk>/erase/", privacy_views.lead_erase, name="lead-erase"),
    path("leads/<int:pk>/consent/withdraw/", privacy_views.lead_consent_withdraw, name="lead-consent-withdraw"),
]
