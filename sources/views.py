"""People's pages: sign up, Connections, and the connect and disconnect steps."""

from __future__ import annotations

import json
import logging

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from sibling.throttles import rate_limit, user_key
from sources import selectors, services
from sources.forms import ApiKeyForm, DisconnectForm, SignUpForm
from sources.providers import ProviderAuthError, ProviderError
from sources.providers.plaid import Plaid
from sources.providers.rescuetime import RescueTime

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
    return render(request, "sources/connections.html", {"cards": cards})


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


@login_required
@require_http_methods(["GET", "POST"])
@rate_limit(group="rescuetime-key", key=user_key, rate_setting="SIBLING_RESCUETIME_KEY_RATE")
def rescuetime_connect(request: HttpRequest) -> HttpResponse:
    form = ApiKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        api_key = form.cleaned_data["api_key"]
        try:
            RescueTime.key_check(api_key)
        except ProviderAuthError:
            form.add_error("api_key", "RescueTime did not accept this key. Please check it.")
        except ProviderError as err:
            form.add_error(None, str(err))
        else:
            services.connection_upsert(
                user=request.user,
                provider=RescueTime,
                external_account_id=RescueTime.external_account_id_for_key(api_key),
                credentials={"api_key": api_key},
                account_label="RescueTime account",
            )
            messages.success(request, "RescueTime is connected. The first sync has started.")
            return redirect("sources:connections")
    return render(
        request,
        "sources/rescuetime_connect.html",
        {"form": form, "provider": RescueTime, "sandboxed": RescueTime.sandboxed()},
    )


@login_required
def plaid_connect(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "sources/plaid_connect.html",
        {
            "provider": Plaid,
            "link_script_url": Plaid.url("link_script"),
            "sandboxed": Plaid.sandboxed(),
        },
    )


@login_required
@require_POST
@rate_limit(
    group="plaid-link-token",
    key=user_key,
    rate_setting="SIBLING_PLAID_LINK_TOKEN_RATE",
    as_json=True,
)
def plaid_link_token(request: HttpRequest) -> JsonResponse:
    try:
        token = Plaid.link_token_create(client_user_id=str(request.user.pk))
    except ProviderError as err:
        return JsonResponse({"error": str(err)}, status=502)
    return JsonResponse({"link_token": token})


@login_required
@require_POST
def plaid_exchange(request: HttpRequest) -> JsonResponse:
    try:
        body = json.loads(request.body or b"{}")
        public_token = str(body["public_token"])
        institution = str((body.get("institution") or {}).get("name") or "Bank account")[:100]
    except (ValueError, KeyError, TypeError, AttributeError):
        return JsonResponse({"error": "public_token is required"}, status=400)
    try:
        exchanged = Plaid.public_token_exchange(public_token)
    except ProviderError as err:
        return JsonResponse({"error": str(err)}, status=502)
    services.connection_upsert(
        user=request.user,
        provider=Plaid,
        external_account_id=exchanged["item_id"],
        credentials=exchanged,
        account_label=institution,
    )
    messages.success(request, f"{institution} is connected. The first sync has started.")
    return JsonResponse({"redirect": reverse("sources:connections")})
