"""What Google's OAuth 2.0 providers (Gmail, the Google Health API) share: endpoints, the
offline-access consent, and a social-auth backend whose every endpoint comes from the provider.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from social_core.backends.google import GoogleOAuth2

from sources.providers.base import OAuth2Provider

logger = logging.getLogger(__name__)

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


TOKEN_KEYS = frozenset({"access_token", "refresh_token", "id_token", "token_type", "expires"})


class GoogleProvider(OAuth2Provider):
    # A refresh token comes only with offline access, and again only on a consent screen.
    auth_extra_arguments = {"access_type": "offline", "prompt": "consent"}
    reauth_message = "Google asks you to sign in again."
    # Google's revocation takes the token alone, form-encoded; it answers 200 when revoked and
    # 400 invalid_token for a token already expired or revoked:
    # https://developers.google.com/identity/protocols/oauth2/web-server#tokenrevoke
    revocation_client_auth = "none"
    revocation_sends_hint = False
    revocation_already_revoked = frozenset({(400, "invalid_token")})


class ProviderGoogleOAuth2(GoogleOAuth2):
    """Google OAuth2 for one provider; the backend's name is the provider's id."""

    provider: ClassVar[type[GoogleProvider]]
    # social-core hard-codes the user-info URL; every endpoint is taken from the provider here.

    def authorization_url(self) -> str:
        return self.provider.url("authorize")

    def access_token_url(self) -> str:
        return self.provider.url("token")

    def revoke_token_url(self, token: str, uid: str) -> str:
        return self.provider.url("revoke")

    def get_key_and_secret(self) -> tuple[str, str]:
        creds = self.provider.client_credentials()
        return creds["client_id"], creds["client_secret"]

    def get_scope(self) -> list[str]:
        return [*self.DEFAULT_SCOPE, *self.provider.scopes]

    def auth_extra_arguments(self) -> dict[str, Any]:
        return {**super().auth_extra_arguments(), **self.provider.auth_extra_arguments}

    def extra_data(
        self,
        user: Any,
        uid: str,
        response: dict[str, Any],
        details: dict[str, Any],
        pipeline_kwargs: dict[str, Any],
    ) -> dict[str, Any]:
        # social_django would keep the tokens in UserSocialAuth.extra_data in plaintext; they
        # live only in the connection's encrypted credentials (sources.pipeline).
        data = super().extra_data(user, uid, response, details, pipeline_kwargs)
        return {k: v for k, v in data.items() if k not in TOKEN_KEYS}

    def do_auth(self, access_token: str, *args: Any, **kwargs: Any) -> Any:
        """Finish the connect; when it is refused after the tokens came, revoke them.

        Everything after the token exchange (user info, the pipeline: a missing scope, storing
        the connection) can still refuse the connect, and a grant nobody keeps must not stay
        alive at Google. Except when the account is already connected (to another person, or
        to this one, whose reconnect was refused): Google keeps one grant per account and
        client, so revoking would end that connection's grant too.
        """
        try:
            return super().do_auth(access_token, *args, **kwargs)
        except Exception as err:
            in_use = getattr(err, "code", "") == "identity_in_use" or getattr(
                err, "grant_in_use", False
            )
            if not in_use:
                from sources.revocations import connect_tokens_revoke

                try:
                    connect_tokens_revoke(
                        provider=self.provider,
                        response={"access_token": access_token, **(kwargs.get("response") or {})},
                        user=kwargs.get("user"),
                    )
                except Exception as revoke_err:  # the refusal itself must still reach the person
                    logger.error(
                        "%s: the tokens of a refused connect were not revoked: %s",
                        self.provider.id,
                        type(revoke_err).__name__,
                    )
            raise

    def user_data(self, access_token: str, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        response = self.get_json(
            self.provider.url("userinfo"), headers={"Authorization": f"Bearer {access_token}"}
        )
        self.validate_email_verified(response)
        return response
