"""What Google's OAuth 2.0 providers share: endpoints, the offline-access consent, Google's
revocation, and a social-auth backend whose every endpoint comes from the provider.
"""

from __future__ import annotations

from typing import Any

from social_core.backends.google import GoogleOAuth2

from sources.providers.base import OAuth2Provider
from sources.providers.oauth2 import ProviderBackendMixin

# https://developers.google.com/identity/protocols/oauth2/web-server
GOOGLE_URLS = {
    "authorize": "https://accounts.google.com/o/oauth2/v2/auth",
    "token": "https://oauth2.googleapis.com/token",
    "revoke": "https://oauth2.googleapis.com/revoke",
    "userinfo": "https://www.googleapis.com/oauth2/v3/userinfo",
}
GOOGLE_SANDBOX_PATHS = {
    "authorize": "/google/o/oauth2/v2/auth",
    "token": "/google/token",
    "revoke": "/google/revoke",
    "userinfo": "/google/oauth2/v3/userinfo",
}


class GoogleBackend(ProviderBackendMixin, GoogleOAuth2):
    """Google OAuth2 for one provider (``OAuth2Provider.backend()`` names it after the id).

    social-core hard-codes Google's endpoints, the user-info URL too; the mixin takes every one
    from the provider.
    """

    def user_data(self, access_token: str, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        response = self.get_json(
            self.provider.url("userinfo"), headers={"Authorization": f"Bearer {access_token}"}
        )
        # No `email_verified` check (social-core's sign-in does one): the claim is optional in
        # OpenID Connect, and a connected account is only linked, never used to sign anyone in.
        return response


# Google's token response writes OpenID Connect's short scope names out in full:
# https://developers.google.com/identity/protocols/oauth2/scopes#oauth2
GOOGLE_SCOPE_EXPANSION = {
    "email": "https://www.googleapis.com/auth/userinfo.email",
    "profile": "https://www.googleapis.com/auth/userinfo.profile",
}


class GoogleProvider(OAuth2Provider):
    backend_base = GoogleBackend

    @staticmethod
    def scope_expand(scope: str) -> str:
        """A scope as Google's token response writes it (`email` -> `.../userinfo.email`)."""
        return GOOGLE_SCOPE_EXPANSION.get(scope, scope)

    # A refresh token comes only with offline access, and again only on a consent screen.
    auth_extra_arguments = {"access_type": "offline", "prompt": "consent"}
    reauth_message = "Google asks you to sign in again."
    # Google's revocation takes the token alone, form-encoded; it answers 200 when revoked and
    # 400 invalid_token for a token already expired or revoked:
    # https://developers.google.com/identity/protocols/oauth2/web-server#tokenrevoke
    revocation_client_auth = "none"
    revocation_sends_hint = False
    revocation_already_revoked = frozenset({(400, "invalid_token")})
