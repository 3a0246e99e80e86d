from django.urls import path

from . import views

app_name = "leads"

urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("<int:pk>/", views.lead_detail, name="detail"),
]
