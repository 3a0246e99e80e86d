from django.urls import path

from . import views

app_name = "leads"

urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("fresh/", views.inbox_fresh, name="fresh"),
    path("bulk/", views.inbox_bulk, name="bulk"),
    path("views/", views.inbox_save_view, name="save-view"),
    path("<int:pk>/", views.lead_detail, name="detail"),
    path("<int:pk>/<slug:action>/", views.lead_action, name="action"),
]
