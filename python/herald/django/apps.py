from django.apps import AppConfig


class HeraldConfig(AppConfig):
    """Herald's Django app (static browser client, messaging helpers)."""

    name = "herald.django"
    label = "herald"
    verbose_name = "Herald"
