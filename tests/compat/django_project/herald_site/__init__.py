
# Load the Celery app when Django starts, so @shared_task binds to it (Celery's Django recipe).
from .celery import app as celery_app  # noqa: E402

__all__ = ("celery_app",)
