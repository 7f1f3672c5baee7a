from django.http import JsonResponse


def herald_whoami(request):
    """Herald's HTTP auth callback: 200 {"username", "user_id"} for a logged-in user, else 401.

    Runs behind Django's own SessionMiddleware + AuthenticationMiddleware, so it answers exactly
    what Django HTTP would decide for the forwarded Cookie header.
    """
    user = request.user
    if not user.is_authenticated:
        return JsonResponse({"detail": "anonymous"}, status=401)
    return JsonResponse({"username": user.get_username(), "user_id": user.pk})
