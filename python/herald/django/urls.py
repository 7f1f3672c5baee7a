"""``path("", include("herald.django.urls"))``: the authentication callback at
``herald/whoami/`` (see ``herald.django.views``)."""

from django.urls import path

from . import views

urlpatterns = [path("herald/whoami/", views.whoami, name="herald-whoami")]
