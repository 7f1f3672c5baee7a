from django.urls import path

from OptsIO import views

urlpatterns = [
    path("herald/whoami/", views.herald_whoami, name="herald-whoami"),
]
