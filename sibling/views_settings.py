"""The person's settings page (``/settings/``): time zone and alert emails."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from sibling.forms import PersonSettingsForm
from sibling.people import person_of


@login_required
@require_http_methods(["GET", "POST"])
def person_settings(request: HttpRequest) -> HttpResponse:
    person = person_of(request.user)
    form = PersonSettingsForm(request.POST or None, instance=person)
    if request.method == "POST":
        if form.is_valid():
            form.save()
            messages.success(
                request, f"Saved. Times are shown in {form.cleaned_data['time_zone']}."
            )
            return redirect("person_settings")
        return render(request, "settings.html", {"form": form}, status=400)
    return render(request, "settings.html", {"form": form})
