"""The Celery app of the test project, as the Celery docs set one up for Django.

The broker comes from CELERY_BROKER_URL (a Redis URL; the tests start their own redis-server).
"""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "herald_site.settings")

app = Celery("herald_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
