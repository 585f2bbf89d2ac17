import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

USERNAME = "admin"


class Command(BaseCommand):
    help = "Development only: create a superuser if there is none, and print its login."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("ensure_dev_superuser runs with DEBUG on only")
        password_file = Path(settings.VAR_DIR) / "dev-admin-password"
        user_model = get_user_model()
        if not user_model.objects.filter(is_superuser=True).exists():
            password = secrets.token_urlsafe(12)
            user_model.objects.create_superuser(USERNAME, "admin@localhost", password)
            password_file.parent.mkdir(parents=True, exist_ok=True)
            password_file.touch(mode=0o600)
            password_file.write_text(password + "\n")
            self.stdout.write(f"Created the development superuser {USERNAME}.")
        if password_file.exists():
            password = password_file.read_text().strip()
            self.stdout.write(f"Admin login: {USERNAME} / {password}")
        else:
            self.stdout.write("A superuser exists already (its password is not known here).")
