"""`manage.py check --deploy` says when the guard against server-side request forgery is off in
production."""

from django.core.checks import run_checks


def _ids() -> set[str]:
    return {message.id for message in run_checks(include_deployment_checks=True)}


def test_deploy_check_warns_when_subscribers_may_reach_private_addresses(settings):
    settings.DEBUG = False
    settings.SIBLING_SUBSCRIBER_ALLOW_HTTP = True
    assert "outbound.W001" in _ids()
    settings.SIBLING_SUBSCRIBER_ALLOW_HTTP = False
    assert "outbound.W001" not in _ids()


def test_development_allows_http_without_a_warning(settings):
    settings.DEBUG = True
    settings.SIBLING_SUBSCRIBER_ALLOW_HTTP = True
    assert "outbound.W001" not in _ids()
