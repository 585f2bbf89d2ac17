"""The hooks of ``kit.OAuth2ProviderTests`` for providers behind Google's sign-in: their sandbox
accounts are Google accounts (an email) at the sandbox's one Google OAuth server, whose faults
and grants every Google provider shares."""

from __future__ import annotations

from sources.sandbox.faults import fault_clear, fault_set
from sources.sandbox.models import GoogleAccessToken, GoogleGrant


class GoogleSandboxHooks:
    granular_consent = True

    def unticked_scope_values(self, form_fields: dict[str, str]) -> dict[str, str]:
        # Google's consent page has one box per scope beyond sign-in's basic ones.
        return {name: "" for name in form_fields if name.startswith("grant:")}

    def browser_untick(self, page) -> None:
        for box in page.locator('input[type=checkbox][name^="grant:"]').all():
            box.uncheck()

    def sandbox_fault(self, account: str, fault: str, count: int = 1) -> None:
        fault_set("google", account, fault, count)

    def sandbox_fault_clear(self, account: str) -> None:
        fault_clear("google", account)

    def grant_revoked(self, account: str) -> bool:
        grants = GoogleGrant.objects.filter(email=account)
        return grants.exists() and not grants.filter(revoked=False).exists()

    def issued_tokens(self, account: str) -> list[str]:
        grants = GoogleGrant.objects.filter(email=account)
        access = GoogleAccessToken.objects.filter(email=account)
        return [g.refresh_token for g in grants] + [a.token for a in access]
