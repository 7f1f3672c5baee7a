"""Herald's Django app: ``INSTALLED_APPS += ["herald.django"]``.

* ``{% static 'herald/task-notifications.js' %}``: the browser client, the same file that
  ``herald serve`` serves at ``/static/herald/task-notifications.js``;
* ``herald.django.messaging``: the user guide's helpers (``ws_send_message``,
  ``ws_send_notification``, ``ws_send_file``, ``ws_broadcast_message``,
  ``test_websocket_connection``) with the guide's message shapes.
"""
