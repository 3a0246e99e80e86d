from django.urls import path

from . import views

app_name = "nurturing"

urlpatterns = [
    path("n/u/<str:token>/", views.unsubscribe, name="unsubscribe"),
    path("n/o/<str:token>/", views.open_pixel, name="open"),
    path("n/c/<str:token>/", views.click, name="click"),
    path("nurturing/enroll/", views.enroll, name="enroll"),
    path("nurturing/unenroll/", views.unenroll, name="unenroll"),
]
