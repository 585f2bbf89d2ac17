"""Re-wrap every data key under a new master key; records are not touched.

Data keys are only wrapped by the master key, so rotating it rewrites the key vault, not the
data. The old and the new key are held together under different KMS provider names (a local
key can be named: ``local:2027``); afterwards the processes run with the new provider and key
only, and the old key can be destroyed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from pymongo.encryption import ClientEncryption

from sibling import mongo
from sibling.encryption import CODEC_OPTIONS, key_vault_collection
from sibling.master_key import MASTER_KEY_ENV, master_key_decode, master_key_generate


class Command(BaseCommand):
    help = "Re-wrap every data key under a new master key (local or a cloud KMS)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--to-provider",
            required=True,
            help='the new KMS provider name, e.g. "local:2027" or "aws" (must differ from the '
            "current SIBLING_KMS_PROVIDER)",
        )
        parser.add_argument(
            "--new-key-file",
            help="local: file holding the new base64 key; created (mode 0600) when missing",
        )
        parser.add_argument("--kms-credentials", help="cloud KMS: credentials as JSON")
        parser.add_argument("--kms-master-key", help="cloud KMS: the master key document as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        current = settings.SIBLING_KMS_PROVIDER
        target = options["to_provider"]
        if target == current:
            raise CommandError("--to-provider must differ from the current provider name")
        credentials, master_key = self._target(target, options)
        providers = {**settings.SIBLING_KMS_PROVIDERS, target: credentials}
        with ClientEncryption(
            providers, settings.SIBLING_KEY_VAULT_NAMESPACE, mongo.plain_client(), CODEC_OPTIONS
        ) as both:
            result = both.rewrap_many_data_key({}, provider=target, master_key=master_key)
        rewrapped = result.bulk_write_result.modified_count if result.bulk_write_result else 0
        total = key_vault_collection().count_documents({})
        left = key_vault_collection().count_documents({"masterKey.provider": {"$ne": target}})
        if left:
            raise CommandError(f"{left} of {total} data keys are still under another master key")
        self.stdout.write(f"{rewrapped} of {total} data keys re-wrapped under {target}.")
        self.stdout.write(
            f"Now run every process with SIBLING_KMS_PROVIDER={target} and the new key "
            f"({MASTER_KEY_ENV} from the key file, or the KMS variables), then destroy the old key."
        )

    def _target(self, target: str, options: dict[str, Any]) -> tuple[dict, dict | None]:
        if target.split(":")[0] == "local":
            path = options["new_key_file"]
            if not path:
                raise CommandError("--new-key-file is required for a local master key")
            return {"key": self._local_key(Path(path))}, None
        try:
            credentials = json.loads(options["kms_credentials"] or "{}")
            master_key = json.loads(options["kms_master_key"] or "null")
        except json.JSONDecodeError as err:
            raise CommandError("--kms-credentials and --kms-master-key must be JSON") from err
        if master_key is None:
            raise CommandError("--kms-master-key is required for a cloud KMS")
        return credentials, master_key

    def _local_key(self, path: Path) -> bytes:
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(master_key_generate() + "\n")
            self.stdout.write(f"A new master key was written to {path} (mode 0600).")
        return master_key_decode(path.read_text(), source=str(path))
