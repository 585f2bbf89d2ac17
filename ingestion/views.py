"""People's page for their API tokens (Settings, API tokens)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from ingestion.authentication import (
    api_token_create,
    api_token_get,
    api_token_revoke,
    api_tokens_of,
)
from ingestion.erasure import person_erase
from ingestion.forms import ApiTokenForm, EraseForm


@never_cache  # the answer to a creation holds the token itself
@login_required
@require_http_methods(["GET", "POST"])
def api_tokens(request: HttpRequest) -> HttpResponse:
    form = ApiTokenForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        # Shown in this answer only: the token is not stored, so no later page can show it.
        created = api_token_create(user=request.user, name=form.cleaned_data["name"])
        form = ApiTokenForm()
    return render(
        request,
        "ingestion/api_tokens.html",
        {"form": form, "tokens": api_tokens_of(user=request.user), "created": created},
    )


@login_required
@require_POST
def api_token_revoke_view(request: HttpRequest, token_id: str) -> HttpResponse:
    token = api_token_get(user=request.user, token_id=token_id)
    api_token_revoke(token=token)
    messages.success(request, f"The token “{token.name}” is revoked; apps using it are refused.")
    return redirect("ingestion:api_tokens")


@login_required
@require_http_methods(["GET", "POST"])
def privacy(request: HttpRequest) -> HttpResponse:
    """Delete all my data: grants revoked, everything deleted, the data key destroyed."""
    form = EraseForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        report = person_erase(user=request.user)
        logout(request)
        return render(request, "ingestion/erased.html", {"report": report})
    return render(request, "ingestion/privacy.html", {"form": form})
