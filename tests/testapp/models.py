from django.conf import settings
from django.db import models

from sibling.fields import DeterministicEncryptedField, EncryptedField


class Vault(models.Model):
    """A model with both kinds of encrypted field, for the encryption tests."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    label = models.CharField(max_length=50, blank=True)
    secret = EncryptedField(null=True)
    handle = DeterministicEncryptedField(null=True)

    def __str__(self) -> str:
        return self.label or str(self.pk)
