"""The hooks of ``kit.OAuth2ProviderTests`` for providers behind Google's sign-in, whose sandbox
accounts are Google accounts (an email) sharing the sandbox's Google faults and grants."""

from __future__ import annotations

from sources.sandbox.faults import fault_set
from sources.sandbox.models import GoogleAccessToken, GoogleGrant


class GoogleSandboxHooks:
    def expire_access_token(self, account: str) -> None:
        fault_set("google", account, "expire_access_token")

    def fail_next_revocation(self, account: str) -> None:
        fault_set("google", account, "server_error")

    def grant_revoked(self, account: str) -> bool:
        grants = GoogleGrant.objects.filter(email=account)
        return grants.exists() and not grants.filter(revoked=False).exists()

    def issued_tokens(self, account: str) -> list[str]:
        grants = GoogleGrant.objects.filter(email=account)
        access = GoogleAccessToken.objects.filter(email=account)
        return [g.refresh_token for g in grants] + [a.token for a in access]
