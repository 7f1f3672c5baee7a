"""The authentication callback for ``herald serve --auth-callback URL``.

For session engines herald cannot read itself (``cache``, ``file``, custom backends, SSO
middleware): herald forwards each WebSocket handshake's ``Cookie`` header to this view, and
Django's own middleware says who it is. Add ``path("", include("herald.django.urls"))`` to the
URLconf and start herald with ``--auth-callback http://127.0.0.1:8000/herald/whoami/``; keep
the URL on loopback or a private network.
"""

from django.http import JsonResponse
from django.views.decorators.http import require_GET


@require_GET
def whoami(request):
    """``200 {"username", "user_id"}`` for a logged-in user, ``401`` for anyone else."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return JsonResponse({"detail": "anonymous"}, status=401)
    return JsonResponse({"username": user.get_username(), "user_id": user.pk})
