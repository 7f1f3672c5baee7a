"""No HTTP views: the benchmark only uses the WebSocket route."""
urlpatterns = []
