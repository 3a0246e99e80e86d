from django.urls import include, path

from bench.bare.views import BareView

urlpatterns = [
    path("bench/bare/", BareView.as_view()),
    path("", include("config.urls")),
]
