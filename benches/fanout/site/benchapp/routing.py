"""WebSocket routes of the baseline site."""
from django.urls import path

from benchapp.consumers import TaskConsumer

websocket_urlpatterns = [path("ws/tasks/", TaskConsumer.as_asgi())]
