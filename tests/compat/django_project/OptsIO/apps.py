from django.apps import AppConfig


class OptsIOConfig(AppConfig):
    name = "OptsIO"
    default_auto_field = "django.db.models.AutoField"
