"""The social-auth side of an OAuth2 provider: one backend per provider, built from its declaration.

``ProviderBackendMixin`` makes any social-core OAuth2 backend take everything from the provider
(``provider``, set when ``OAuth2Provider.backend()`` builds the class): endpoints from
``url()``, client credentials from ``client_credentials()``, scopes from ``scopes``, extra
authorization arguments from ``auth_extra_arguments``. It also keeps tokens out of
social_django's ``extra_data`` and revokes the tokens of a connect refused after they came.
``ProviderOAuth2`` serves any standard OAuth2 provider (RFC 6749 authorization code grant).

This module imports no declaration at import time: ``sources.providers.base`` imports it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

from social_core.backends.oauth import BaseOAuth2

if TYPE_CHECKING:
    from sources.providers.base import OAuth2Provider

logger = logging.getLogger(__name__)

# What social_django would otherwise keep in UserSocialAuth.extra_data, in plaintext.
TOKEN_KEYS = frozenset({"access_token", "refresh_token", "id_token", "token_type", "expires"})


class ProviderBackendMixin:
    """Put before a social-core OAuth2 backend class; ``provider`` is the declaration."""

    provider: ClassVar[type[OAuth2Provider]]

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
        return [*(getattr(self, "DEFAULT_SCOPE", None) or []), *self.provider.scopes]

    def auth_extra_arguments(self) -> dict[str, Any]:
        return {**super().auth_extra_arguments(), **self.provider.auth_extra_arguments}  # type: ignore[misc]

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
        data = super().extra_data(user, uid, response, details, pipeline_kwargs)  # type: ignore[misc]
        return {k: v for k, v in data.items() if k not in TOKEN_KEYS}

    def do_auth(self, access_token: str, *args: Any, **kwargs: Any) -> Any:
        """Finish the connect; when it is refused after the tokens came, revoke them.

        Everything after the token exchange (user info, the pipeline: a missing scope, storing
        the connection) can still refuse the connect, and a grant nobody keeps must not stay
        alive at the provider. Except when the account is already connected (to another person,
        or to this one, whose reconnect was refused): a provider that keeps one grant per
        account and client would end that connection's grant too.
        """
        try:
            return super().do_auth(access_token, *args, **kwargs)  # type: ignore[misc]
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


class ProviderOAuth2(ProviderBackendMixin, BaseOAuth2):
    """A standard OAuth2 provider: the authorization code grant with the client's id and secret
    in the token request's form, and the account's identity from the declared ``userinfo``
    endpoint (when there is one) under ``id``."""

    ACCESS_TOKEN_METHOD = "POST"  # noqa: S105 (an HTTP method, not a secret)
    REDIRECT_STATE = False
    STATE_PARAMETER = True
    SCOPE_SEPARATOR = " "
    ID_KEY = "id"

    def user_data(self, access_token: str, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        if "userinfo" not in self.provider.urls:
            return {}
        return self.get_json(
            self.provider.url("userinfo"), headers={"Authorization": f"Bearer {access_token}"}
        )

    def get_user_details(self, response: dict[str, Any]) -> dict[str, Any]:
        # Accounts are connected, never used to sign in: only what names the account on the
        # Connections page (sources.pipeline.account_label_from), with OpenID Connect's claims.
        return {
            "username": response.get("preferred_username") or response.get("username") or "",
            "email": response.get("email") or "",
            "fullname": response.get("name") or "",
        }
