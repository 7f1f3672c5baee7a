"""``manage.py herald_check [--cookie 'sessionid=…'] [--herald PATH]``: ``herald check`` with
the configuration ``herald_config`` writes, so what is checked is what these settings say."""

import os
import shutil
import subprocess
import tempfile

from django.core.management.base import BaseCommand, CommandError

from herald.django.config import ConfigError, herald_config, to_toml

from .herald_config import write_secret_file


class Command(BaseCommand):
    help = "Runs `herald check` with the configuration derived from these settings."

    def add_arguments(self, parser):
        parser.add_argument("--cookie", help="a logged-in browser's session cookie to verify")
        parser.add_argument("--layer", default="default", help="CHANNEL_LAYERS alias")
        parser.add_argument(
            "--herald",
            default=os.environ.get("HERALD_BIN") or shutil.which("herald"),
            help="the herald binary (default: $HERALD_BIN, else herald on PATH)",
        )

    def handle(self, *args, **options):
        if not options["herald"]:
            raise CommandError("no herald binary: put herald on PATH or pass --herald")
        try:
            config, warnings = herald_config(options["layer"])
        except ConfigError as err:
            raise CommandError(str(err)) from err
        for warning in warnings:
            self.stderr.write(f"warning: {warning}")
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "herald.toml")
            write_secret_file(path, to_toml(config))
            command = [options["herald"], "check", "--config", path]
            if options["cookie"]:
                command += ["--cookie", options["cookie"]]
            result = subprocess.run(command, capture_output=True, text=True)
        self.stdout.write(result.stdout, ending="")
        if result.stderr:
            self.stderr.write(result.stderr, ending="")
        if result.returncode != 0:
            raise CommandError(f"herald check failed (exit {result.returncode})")
