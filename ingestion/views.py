"""People's pages: API tokens (Settings, API tokens), privacy, and My data with its export."""

from __future__ import annotations

import uuid
from datetime import UTC
from typing import Any

from django import forms as django_forms
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from ingestion import mydata
from ingestion.authentication import (
    api_token_create,
    api_token_get,
    api_token_revoke,
    api_tokens_of,
)
from ingestion.erasure import person_erase
from ingestion.events import events_accept
from ingestion.export import export_response
from ingestion.forms import VOLUNTEERED_FORMS, ApiTokenForm, EraseForm
from ingestion.ledger import Action, ledger_of, ledger_record
from ingestion.models import ApiToken
from sibling.people import person_zone
from sibling.throttles import password_guess_usage


class ApiTokenScopesForm(ApiTokenForm):
    """A token's name and what it may do (one or more scopes; sending events when none is
    ticked, which is what every token could do before scopes existed)."""

    scopes = django_forms.MultipleChoiceField(
        label="What it may do",
        choices=ApiToken.Scope.choices,
        initial=[ApiToken.Scope.EVENTS_WRITE],
        required=False,
        widget=django_forms.CheckboxSelectMultiple,
    )

    def clean_scopes(self) -> list[str]:
        return self.cleaned_data["scopes"] or [ApiToken.Scope.EVENTS_WRITE]


@never_cache  # the answer to a creation holds the token itself
@login_required
@require_http_methods(["GET", "POST"])
def api_tokens(request: HttpRequest) -> HttpResponse:
    form = ApiTokenScopesForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        # Shown in this answer only: the token is not stored, so no later page can show it.
        created = api_token_create(
            user=request.user,
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"],
        )
        form = ApiTokenScopesForm()
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


ERASE_TOO_MANY_WRONG_PASSWORDS = "Too many wrong passwords. Nothing was deleted; try again later."


@login_required
@require_http_methods(["GET", "POST"])
def privacy(request: HttpRequest) -> HttpResponse:
    """Delete all my data (the phrase and the person's password): grants revoked, everything
    deleted, the data key destroyed."""
    form = EraseForm(request.POST or None, user=request.user)
    if request.method == "POST":
        usage = password_guess_usage(request, increment=False)
        if usage and usage["count"] >= usage["limit"]:
            response = _privacy_page(
                request,
                EraseForm(user=request.user),
                status=429,
                refusal=ERASE_TOO_MANY_WRONG_PASSWORDS,
            )
            response["Retry-After"] = str(max(1, int(usage["time_left"])))
            return response
        if form.is_valid():
            report = person_erase(user=request.user)
            logout(request)
            return render(request, "ingestion/erased.html", {"report": report})
        if form.password_refused:
            password_guess_usage(request, increment=True)
    return _privacy_page(request, form)


def _privacy_page(
    request: HttpRequest, form: EraseForm, *, status: int = 200, refusal: str = ""
) -> HttpResponse:
    context = {"form": form, "ledger": ledger_of(user=request.user), "refusal": refusal}
    return render(request, "ingestion/privacy.html", context, status=status)


@never_cache  # the page shows decrypted records
@login_required
@require_http_methods(["GET", "POST"])
def my_data(request: HttpRequest) -> HttpResponse:
    """What Sibling holds about the person, and volunteered entries added by hand."""
    entry = request.POST.get("entry") if request.method == "POST" else None
    forms = {
        kind: form_class(request.POST if kind == entry else None, prefix=kind)
        for kind, form_class in VOLUNTEERED_FORMS.items()
    }
    if request.method == "POST":
        form = forms.get(entry or "")
        if form is None:
            messages.error(request, "Choose what to add.")
        elif form.is_valid():
            result = events_accept(user=request.user, events=[_volunteered_event(form)])
            if result.accepted:
                messages.success(request, "Saved. It appears below once it has been processed.")
                return redirect("ingestion:my_data")
            # The form checks what the schema checks; this answers anything it missed.
            for rejection in result.rejected:
                form.add_error(None, rejection.reason)
    # Days and times in the person's own zone, whichever zone the request runs in.
    zone = person_zone(request.user)
    counts = mydata.record_counts(user=request.user)
    kinds = mydata.kinds_of(counts)
    summary = mydata.summary(
        user=request.user,
        zone=zone,
        kinds={kind: collection for kind, (collection, _) in kinds.items()},
    )
    pages = mydata.kind_pages(user=request.user, kinds=kinds, asked=request.GET, zone=zone)
    context = {
        "zone": zone,
        "summary": summary,
        "summary_rows": [
            (mydata.day_label(day, summary.today), day, figures) for day, figures in summary.rows
        ],
        "chart_days": mydata.CHART_DAYS,
        "chart_height": mydata.CHART_HEIGHT,
        "chart_width": mydata.CHART_DAYS * mydata.BAR_STEP,
        "bar_width": mydata.BAR_WIDTH,
        "counts": counts,
        "total": sum(c.total for c in counts),
        "pages": [(page, _page_links(request, page)) for page in pages],
        "forms": forms,
    }
    status = 400 if entry and forms.get(entry) is not None and forms[entry].errors else 200
    return render(request, "ingestion/my_data.html", context, status=status)


def _page_links(request: HttpRequest, page: mydata.KindPage) -> dict[str, str]:
    """Links to the newer and older pages of one kind, keeping the other kinds' pages."""
    links = {}
    for name, number in (("newer", page.page - 1), ("older", page.page + 1)):
        if 1 <= number <= page.pages:
            query = request.GET.copy()
            query[page.param] = str(number)
            links[name] = f"?{query.urlencode()}#records-{page.kind}"
    return links


def _volunteered_event(form: Any) -> dict[str, Any]:
    """One event as the events API takes it, with a client id of its own."""
    data = {
        name: value.astimezone(UTC).isoformat() if hasattr(value, "astimezone") else value
        for name, value in form.event_data().items()
    }
    occurred_at = data.get("start") or timezone.now().astimezone(UTC).isoformat()
    return {
        "id": f"web-{uuid.uuid4()}",
        "kind": form.kind,
        "occurred_at": occurred_at,
        "data": data,
    }


@login_required
@require_POST
def my_data_export(request: HttpRequest) -> StreamingHttpResponse:
    """The person's data as a ZIP, streamed as it is written."""
    ledger_record(
        subject_id=request.user.pk,
        actor=request.user,
        action=Action.EXPORT,
        scope="all my data (My data page)",
        reason="Downloaded by you from My data",
    )
    return export_response(user=request.user)
