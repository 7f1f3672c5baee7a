"""Serve the project over WSGI on 127.0.0.1:<ephemeral port> for the HTTP-callback tests.

Binds port 0 itself (no race for a free port), prints {"port": N} on one line, then serves until
killed.
"""
import json
import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.core.management.base import BaseCommand
from django.core.wsgi import get_wsgi_application


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


class Command(BaseCommand):
    help = "Serve the WSGI app on 127.0.0.1 with an ephemeral port; print it as JSON."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=0)

    def handle(self, *args, **opts):
        server = make_server(
            "127.0.0.1",
            opts["port"],
            get_wsgi_application(),
            server_class=_ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
        sys.stdout.write(json.dumps({"port": server.server_address[1]}) + "\n")
        sys.stdout.flush()
        server.serve_forever()
