"""People's pages: sign up, Connections, and the connect and disconnect steps."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.db import DatabaseError
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    JsonResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST
from pymongo.errors import PyMongoError

from ingestion.errors import PersonErased
from sibling.throttles import rate_limit, user_key
from sources import selectors, services
from sources.forms import (
    ApiKeyForm,
    BackfillForm,
    DisconnectForm,
    SignUpForm,
    SyncIntervalForm,
    backfill_label,
    interval_label,
)
from sources.models import UserDataSource
from sources.providers import (
    ApiKeyProvider,
    HostedLinkProvider,
    OAuth2Provider,
    Provider,
    ProviderAuthError,
    ProviderError,
    get_provider,
)
from sources.revocations import connect_tokens_revoke

logger = logging.getLogger(__name__)
CONNECTION_ACTIONS = ("pause", "resume", "sync")


def home(request: HttpRequest) -> HttpResponse:
    return redirect("sources:connections" if request.user.is_authenticated else "login")


@require_http_methods(["GET", "POST"])
@rate_limit(group="signup", key="ip", rate_setting="SIBLING_SIGNUP_RATE")
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("sources:connections")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, "Welcome to Sibling. Connect a first source below.")
        return redirect("sources:connections")
    return render(request, "sources/signup.html", {"form": form})


@login_required
def connections(request: HttpRequest) -> HttpResponse:
    cards = selectors.connection_cards(user=request.user)
    for card in cards:
        # The connect step's history window (an OAuth2 card posts it to the begin step).
        card.history_form = BackfillForm(provider=card.provider)
        # Beside "Connect again" too (after a refused connect), with ids of its own.
        card.history_form_again = BackfillForm(
            provider=card.provider, auto_id=f"id_%s_again_{card.provider.id}"
        )
        for connection in card.connections:
            connection.history_label = backfill_label(
                card.provider, connection.backfill_days_in_force
            )
            if connection.status == UserDataSource.Status.DISCONNECTED:
                continue
            connection.interval_form = SyncIntervalForm(connection=connection)
            if connection.history_choosable():
                connection.history_form = BackfillForm(
                    provider=card.provider,
                    days=connection.backfill_days_in_force,
                    auto_id=f"id_%s_{connection.pk}",
                )
    return render(request, "sources/connections.html", {"cards": cards})


@login_required
@require_POST
def connection_schedule(request: HttpRequest, connection_id: str) -> HttpResponse:
    """How often one of the person's connections syncs (another person's: 404)."""
    connection = selectors.connection_get(user=request.user, connection_id=connection_id)
    name = connection.provider_class.name
    form = SyncIntervalForm(request.POST, connection=connection)
    if connection.status == UserDataSource.Status.DISCONNECTED:
        messages.error(request, f"{name} is disconnected: reconnect it to choose its schedule.")
    elif not form.is_valid() or not services.connection_schedule_set(
        connection=connection, sync_interval=form.cleaned_data["sync_interval"]
    ):
        messages.error(request, f"That is not a schedule {name} offers. Please choose one.")
    else:
        when = interval_label(connection.sync_interval).lower()
        messages.success(request, f"{name} now syncs {when}.")
    return redirect("sources:connections")


@login_required
@require_POST
def connection_history(request: HttpRequest, connection_id: str) -> HttpResponse:
    """How far back one of the person's connections fetches, before its first sync has
    fetched anything (another person's: 404)."""
    connection = selectors.connection_get(user=request.user, connection_id=connection_id)
    provider = connection.provider_class
    form = BackfillForm(request.POST, provider=provider, auto_id=f"id_%s_{connection.pk}")
    if not form.is_valid() or form.cleaned_data["backfill_days"] is None:
        messages.error(request, f"That is not a history window {provider.name} offers.")
    elif services.connection_backfill_set(
        connection=connection, backfill_days=form.cleaned_data["backfill_days"]
    ):
        label = backfill_label(provider, connection.backfill_days_in_force)
        messages.success(request, f"{provider.name}'s first sync will fetch: {label}.")
    else:
        messages.error(
            request,
            f"{provider.name} has started fetching your history, so how far back it goes "
            "can no longer change.",
        )
    return redirect("sources:connections")


@login_required
@require_POST
def connection_action(request: HttpRequest, connection_id: str, action: str) -> HttpResponse:
    if action not in CONNECTION_ACTIONS:
        raise Http404("No such action")
    connection = selectors.connection_get(user=request.user, connection_id=connection_id)
    name = connection.provider_class.name
    if action == "pause":
        services.connection_pause(connection=connection)
        messages.success(request, f"{name} is paused.")
    elif action == "resume":
        services.connection_resume(connection=connection)
        messages.success(request, f"{name} is syncing again.")
    elif action == "sync":
        if services.connection_sync_now(connection=connection):
            messages.success(request, f"{name} will sync in a moment.")
        else:
            messages.error(
                request,
                f"{name} cannot sync while it is {connection.get_status_display().lower()}.",
            )
    return redirect("sources:connections")


@login_required
@require_http_methods(["GET", "POST"])
def connection_disconnect(request: HttpRequest, connection_id: str) -> HttpResponse:
    connection = selectors.connection_get(user=request.user, connection_id=connection_id)
    form = DisconnectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        result = services.connection_disconnect(
            connection=connection, delete_data=form.cleaned_data["data"] == DisconnectForm.DELETE
        )
        name = result.provider_name
        if result.revoked:
            deleted = (
                f" and {result.records_deleted} records from it were deleted"
                if result.data_deleted
                else ""
            )
            messages.success(request, f"{name} is disconnected{deleted}.")
        else:
            # Sibling has let go, but the grant may still be alive at the provider: say so.
            done = (
                f"forgotten its keys and deleted {result.records_deleted} records from it"
                if result.data_deleted
                else "forgotten its keys"
            )
            messages.warning(
                request,
                f"{name} is disconnected in Sibling: Sibling has stopped using it and {done}. "
                f"But {name} has not confirmed yet that Sibling's access is withdrawn. "
                + (
                    "Sibling keeps asking, and this page shows it until then. "
                    if result.revocation_pending
                    else ""
                )
                + f"You can also remove Sibling's access in your account settings at {name}.",
            )
        return redirect("sources:connections")
    return render(
        request,
        "sources/disconnect.html",
        {
            "connection": connection,
            "form": form,
            "pending_revocations": selectors.revocations_pending(
                user=request.user, connection=connection
            ),
        },
    )


def _provider_get(provider_id: str, auth_mode: str | None = None) -> type[Provider]:
    """The registered provider, or 404: an unknown id and a provider of another auth mode than
    the URL's look the same."""
    try:
        provider = get_provider(provider_id)
    except LookupError:
        raise Http404("No such source") from None
    if auth_mode is not None and provider.auth_mode != auth_mode:
        raise Http404("No such source")
    return provider


@login_required
@require_http_methods(["GET", "POST"])
def connect(request: HttpRequest, provider_id: str) -> HttpResponse:
    """Connect a source, the way its auth mode does it."""
    provider = _provider_get(provider_id)
    if issubclass(provider, ApiKeyProvider):
        # Each provider's key checks are counted apart: one provider's refusals spend no other's.
        limited = rate_limit(
            group=f"connect-key:{provider.id}",
            key=user_key,
            rate_setting="SIBLING_CONNECT_KEY_RATE",
        )(_key_connect)
        return limited(request, provider)
    if issubclass(provider, HostedLinkProvider):
        if request.method != "GET":
            return HttpResponseNotAllowed(["GET"])
        return render(
            request,
            "sources/connect_hosted_link.html",
            {
                "provider": provider,
                "link_script_url": provider.url("link_script"),
                "sandboxed": provider.sandboxed(),
                # Reconnecting one of the person's connections: the dialog opens for it.
                "reconnecting": _reconnectable(request, provider, request.GET.get("connection")),
                "history_form": BackfillForm(provider=provider),
            },
        )
    if issubclass(provider, OAuth2Provider):
        # social-auth's begin step; a POST stays a POST there (307), with its CSRF token.
        begin = reverse("social:begin", args=[provider.id])
        return HttpResponseRedirect(begin, preserve_request=request.method == "POST")
    raise Http404("No such source")


NOT_STORED_MESSAGE = "The account could not be saved, so nothing was connected. Please try again."


def _connection_store(request: HttpRequest, provider: type[Provider], **connection: Any) -> bool:
    """Store the connection a connect step obtained; False when it cannot be stored (the
    database refused, or the person's erasure has begun and nothing more of theirs is kept)."""
    try:
        services.connection_upsert(user=request.user, provider=provider, **connection)
    except (DatabaseError, PyMongoError, PersonErased) as err:
        logger.warning("%s: a connection could not be stored (%s)", provider.id, type(err).__name__)
        return False
    return True


def _key_connect(request: HttpRequest, provider: type[ApiKeyProvider]) -> HttpResponse:
    form = ApiKeyForm(request.POST or None)
    history_form = BackfillForm(request.POST or None, provider=provider)
    if request.method == "POST" and form.is_valid() and history_form.is_valid():
        api_key = form.cleaned_data["api_key"]
        try:
            provider.key_check(api_key)
        except ProviderAuthError:
            form.add_error("api_key", f"{provider.name} did not accept this key. Please check it.")
        except ProviderError as err:
            form.add_error(None, str(err))
        else:
            stored = _connection_store(
                request,
                provider,
                external_account_id=provider.external_account_id_for_key(api_key),
                credentials={"api_key": api_key},
                account_label=provider.account_label or f"{provider.name} account",
                backfill_days=history_form.cleaned_data["backfill_days"],
            )
            if stored:
                messages.success(
                    request, f"{provider.name} is connected. The first sync has started."
                )
                return redirect("sources:connections")
            form.add_error(None, NOT_STORED_MESSAGE)
    return render(
        request,
        "sources/connect_api_key.html",
        {
            "form": form,
            "history_form": history_form,
            "provider": provider,
            "sandboxed": provider.sandboxed(),
        },
    )


def _json_error(message: str, status: int) -> JsonResponse:
    # The Link page shows the message as it is: it must be safe to show and hold no secret.
    return JsonResponse({"error": message}, status=status)


@login_required
@require_POST
def link_token(request: HttpRequest, provider_id: str) -> HttpResponse:
    """A link token that opens the provider's hosted dialog for this person (JSON)."""
    provider = _provider_get(provider_id, "hosted_link")
    limited = rate_limit(
        group=f"link-token:{provider.id}",
        key=user_key,
        rate_setting="SIBLING_LINK_TOKEN_RATE",
        as_json=True,
    )(_link_token)
    return limited(request, provider)


def _reconnectable(
    request: HttpRequest, provider: type[HostedLinkProvider], connection_id: Any
) -> UserDataSource | None:
    """The person's own connection to this provider named by ``connection_id`` (from the page
    or the browser: anything may be sent), when it still holds credentials to reconnect."""
    if not isinstance(connection_id, str) or not connection_id or len(connection_id) > 64:
        return None
    try:
        connection = selectors.connection_get(user=request.user, connection_id=connection_id)
    except Http404:
        return None
    if connection.provider != provider.id or connection.status == connection.Status.DISCONNECTED:
        return None
    return connection if connection.credentials else None


def _body(request: HttpRequest) -> dict[str, Any] | None:
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past any reason
        return None
    return body if isinstance(body, dict) else None


# Where the link-token step keeps the history window it asked the provider for, until the
# exchange stores the connection (per provider: a person may have two connect pages open).
LINK_BACKFILL_SESSION_KEY = "sources.link_backfill_days"


def _link_token(request: HttpRequest, provider: type[HostedLinkProvider]) -> JsonResponse:
    body = _body(request) or {}
    reconnecting = None
    if body.get("connection") is not None:
        reconnecting = _reconnectable(request, provider, body.get("connection"))
        if reconnecting is None:
            return _json_error("This connection cannot be reconnected.", 404)
    backfill_days = None
    if reconnecting is None and body.get("backfill_days") is not None:
        history = BackfillForm({"backfill_days": body.get("backfill_days")}, provider=provider)
        if not history.is_valid():
            return _json_error(f"backfill_days: not a history window {provider.name} offers", 400)
        backfill_days = history.cleaned_data["backfill_days"]
    try:
        token = provider.link_token_create(
            client_user_id=str(request.user.pk),
            credentials=reconnecting.credentials if reconnecting is not None else None,
            backfill_days=backfill_days,
        )
    except ProviderError as err:
        return _json_error(str(err), 502)
    if reconnecting is None:
        chosen = dict(request.session.get(LINK_BACKFILL_SESSION_KEY) or {})
        chosen[provider.id] = backfill_days
        request.session[LINK_BACKFILL_SESSION_KEY] = chosen
    return JsonResponse({"link_token": token})


def _link_backfill_days(request: HttpRequest, provider: type[Provider]) -> int | None:
    """The history window the last link token of this provider asked for (None: the default),
    forgotten once read."""
    chosen = dict(request.session.get(LINK_BACKFILL_SESSION_KEY) or {})
    days = chosen.pop(provider.id, None)
    request.session[LINK_BACKFILL_SESSION_KEY] = chosen
    return days if isinstance(days, int) and provider.backfill_days_valid(days) else None


# A public token is a short opaque string; anything far longer is not one.
PUBLIC_TOKEN_MAX_LENGTH = 500


@login_required
@require_POST
def link_exchange(request: HttpRequest, provider_id: str) -> HttpResponse:
    """The hosted dialog's public token (and its metadata) exchanged for the credentials (JSON).

    The body is ``{"public_token": "...", "metadata": {...}}``. Exchanges are counted with the
    link tokens' rate (a group of their own): each one is a call to the provider.
    """
    provider = _provider_get(provider_id, "hosted_link")
    limited = rate_limit(
        group=f"link-exchange:{provider.id}",
        key=user_key,
        rate_setting="SIBLING_LINK_TOKEN_RATE",
        as_json=True,
    )(_link_exchange)
    return limited(request, provider)


def _link_exchange(request: HttpRequest, provider: type[HostedLinkProvider]) -> JsonResponse:
    body = _body(request)
    if body is None:
        return _json_error("The request was not understood. Please try again.", 400)
    public_token = body.get("public_token")
    metadata = body.get("metadata", {})
    if not isinstance(public_token, str) or not public_token.strip():
        return _json_error("public_token is required", 400)
    if len(public_token) > PUBLIC_TOKEN_MAX_LENGTH or not isinstance(metadata, dict):
        return _json_error("The request was not understood. Please try again.", 400)
    reconnecting = None
    if body.get("connection") is not None:
        reconnecting = _reconnectable(request, provider, body.get("connection"))
        if reconnecting is None:
            return _json_error("This connection cannot be reconnected.", 404)
    try:
        if reconnecting is not None:
            # The dialog ran in update mode for this connection's account.
            result = provider.link_update(reconnecting.credentials, public_token.strip(), metadata)
            label = result.account_label or reconnecting.account_label
            result = replace(result, account_label=label)
        else:
            result = provider.link_exchange(public_token.strip(), metadata)
    except ProviderError as err:
        return _json_error(str(err), 502)
    stored = _connection_store(
        request,
        provider,
        external_account_id=result.external_account_id,
        credentials=result.credentials,
        account_label=result.account_label,
        backfill_days=_link_backfill_days(request, provider) if reconnecting is None else None,
    )
    if not stored:
        if reconnecting is not None and result.credentials == reconnecting.credentials:
            # The connection's own credentials, still stored: nothing new to withdraw.
            return _json_error(NOT_STORED_MESSAGE, 503)
        # Nobody keeps what the exchange obtained: withdraw it now (kept and retried when the
        # provider does not confirm, as any refused connect's).
        try:
            connect_tokens_revoke(provider=provider, response=result.credentials, user=request.user)
        except Exception as err:  # the database that refused may refuse the pending one too
            logger.error(
                "%s: what a refused connect obtained was not withdrawn: %s",
                provider.id,
                type(err).__name__,
            )
        return _json_error(NOT_STORED_MESSAGE, 503)
    messages.success(request, f"{result.account_label} is connected. The first sync has started.")
    return JsonResponse({"redirect": reverse("sources:connections")})
