"""``manage.py herald_config [--output PATH] [--layer ALIAS]``: Herald's TOML from the settings."""

import os
import sys

from django.core.management.base import BaseCommand, CommandError

from herald.django.config import ConfigError, herald_config, to_toml


def write_secret_file(path, text):
    """Writes ``text`` to ``path`` readable and writable by its owner only (0600), also when
    the file already existed with wider permissions."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


class Command(BaseCommand):
    help = "Writes herald's TOML configuration (herald serve --config) from these settings."

    def add_arguments(self, parser):
        parser.add_argument("--output", "-o", help="file to write (mode 0600); default stdout")
        parser.add_argument("--layer", default="default", help="CHANNEL_LAYERS alias")

    def handle(self, *args, **options):
        try:
            config, warnings = herald_config(options["layer"])
            text = to_toml(config)
        except ConfigError as err:
            raise CommandError(str(err)) from err
        for warning in warnings:
            self.stderr.write(f"warning: {warning}")
        if options["output"]:
            write_secret_file(options["output"], text)
            self.stderr.write(f"wrote {options['output']} (mode 0600)")
        else:
            sys.stdout.write(text)
