"""The sandbox's URL contract, relative to settings.SIBLING_SANDBOX_BASE_URL (…/sandbox).

The shared routes (Google's OAuth server, the control APIs), then every registered provider's
imitation (`urlpatterns` of its sandbox module, see sources.sandbox.registry). Mounted only when
the sandbox is allowed (DEBUG), by sibling/urls.py.

Every provider route is wrapped where it is declared (the imitation's own pattern objects), so a
view reached from inside the sandbox (a batch's part) is wrapped too: the provider's quotas
(sources.sandbox.quotas) and the injected round trip (sources.sandbox.latency, once per HTTP
request). Google's OAuth routes wait the Google family's round trip; the control APIs never wait.
"""

from django.urls import URLPattern, path

from . import faults, google, receiver, registry, webhooks
from .latency import latency_check, latency_view
from .quotas import quota_view, quotas_check

app_name = "sandbox"

_WRAPPED = "sandbox_wrapped"


def _wrap(patterns: list, names: tuple[str, ...], quota_args: dict | None = None) -> None:
    for pattern in patterns:
        if not isinstance(pattern, URLPattern) or getattr(pattern.callback, _WRAPPED, False):
            continue
        view = pattern.callback
        if quota_args is not None:
            view = quota_view(view, route=pattern.name or "", **quota_args)
        view = latency_view(view, names)
        setattr(view, _WRAPPED, True)
        pattern.callback = view


_google = [
    # Google OAuth 2.0 (one sandbox for every Google provider's client)
    path("google/o/oauth2/v2/auth", google.authorize, name="google-authorize"),
    path("google/token", google.token, name="google-token"),
    path("google/revoke", google.revoke, name="google-revoke"),
    path("google/oauth2/v3/userinfo", google.userinfo, name="google-userinfo"),
    path("google/oauth2/v3/certs", google.certs, name="google-certs"),
    path("google/avatar/<str:sub>.svg", google.avatar, name="google-avatar"),
]
_wrap(_google, ("google",))

urlpatterns = [
    *_google,
    # Test and development control
    path("_faults", faults.faults_api, name="faults"),
    path("_webhooks", webhooks.webhooks_api, name="webhooks"),
    # A subscriber of Sibling's change notifications (sources.sandbox.receiver)
    path("_receiver", receiver.control, name="receiver-control"),
    path("_receiver/<str:endpoint>/", receiver.receive, name="receiver"),
]

_modules = registry.sandbox_modules()
_families = {provider_id: registry.family_of(provider_id) for provider_id in _modules}
latency_check()
quotas_check(_modules, _families)

for _provider_id, _module in _modules.items():
    _family = _families[_provider_id]
    _wrap(
        _module.urlpatterns,
        tuple(name for name in (_provider_id, _family) if name),
        {"module": _module, "provider_id": _provider_id, "family": _family},
    )
    urlpatterns += _module.urlpatterns
