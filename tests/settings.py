"""The project's settings plus the test-only app."""

from sibling.settings import *  # noqa: F403
from sibling.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast users in tests

# Rate limits count in the shared cache, which outlives each test: generous here so tests that
# log in or fetch webhook keys many times never meet them; the throttle tests set their own.
SIBLING_EVENTS_API_RATE = "100000/min"
SIBLING_LOGIN_RATE_IP = "100000/m"
SIBLING_LOGIN_RATE_USERNAME = "100000/m"
SIBLING_SIGNUP_RATE = "100000/m"
SIBLING_CONNECT_KEY_RATE = "100000/m"
SIBLING_LINK_TOKEN_RATE = "100000/m"
# Providers' declared per-minute limits too (<PROVIDER>_..._PER_MIN), whichever provider.
globals().update({name: 100000 for name in list(globals()) if name.endswith("_PER_MIN")})
# Provider budgets charge nothing; the budget tests switch them on.
SIBLING_BUDGETS = False
# A sandbox bank's history is ready at once; the tests of the wait set their own.
SIBLING_SANDBOX_RECENT_READY_S = 0
SIBLING_SANDBOX_HISTORY_READY_S = 0
# The redirect URI the sandbox's OAuth tests use, registered with its Google clients.
SIBLING_SANDBOX_REDIRECT_URIS = ["http://testserver/complete/"]
# The sandbox enforces no provider quota unless a test switches it on (the quota tests do).
SIBLING_SANDBOX_QUOTAS = "off"
