"""The sandbox's Strava: OAuth, the activities list, rate limits and push subscriptions.

Built from https://developers.strava.com/docs/ (authentication, rate limits, webhooks) and the
notes in ../shared/reference/strava-api.md:

- **OAuth**: a consent page where each requested scope can be unticked; the redirect carries the
  accepted scopes (comma-separated) and the state, or ``error=access_denied``. Codes are single
  use (10 minutes). Access tokens last six hours; a refresh returns the same access token while
  it has more than an hour left, and always a new refresh token: the one used stops working at
  once. ``/oauth/deauthorize`` ends every token of the athlete for the application. Errors are
  Strava's Fault bodies (``{"message", "errors": [{"resource", "field", "code"}]}``).
- **Activities**: deterministic, seeded per athlete (about one a day, a few "only me" ones that
  need ``activity:read_all``), ids above 2^53; ``after``/``before``/``page``/``per_page`` (at
  most 200), ascending with ``after``, newest first without; a page may be short before the end
  (without ``activity:read_all``, "only me" ones are taken out of it); the last page is empty.
- **Rate limits**: per application, every API answer carries ``X-RateLimit-Limit``/``-Usage``
  and ``X-ReadRateLimit-Limit``/``-Usage`` ("<15 min>,<day>", windows at :00/:15/:30/:45 and the
  UTC day); a call over a limit is counted and answered 429. The limits are
  ``STRAVA_SANDBOX_RATE_LIMIT`` and ``STRAVA_SANDBOX_READ_RATE_LIMIT`` (Django settings, default
  Strava's "200,2000" and "100,1000"), small in tests.
- **Connected athletes**: ``STRAVA_SANDBOX_ATHLETE_CAP`` (Django setting, default 0: no cap)
  athletes per application; one more is refused at the code exchange with a 403 Fault
  "Limit of connected athletes exceeded", as a new application's is.
- **Webhooks**: one push subscription per application; creating it sends the validation GET to
  the callback, which must echo the challenge within 2 s. Events (no signature, as at Strava)
  go to the callback, retried for three attempts in all.

Faults (sources.sandbox.faults, account = the athlete id): the shared ``rate_limit``,
``server_error``, ``malformed``, ``revoke`` (deauthorizes every token), plus
``expire_access_token`` and ``new_activity`` (``count`` new activities, then their create
events). ``POST /sandbox/_webhooks`` with ``"provider": "strava"`` has the actions of
``webhook_controls`` (documented on each).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import requests
from django.conf import settings
from django.db import IntegrityError, connections, router
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template import engines
from django.urls import path
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from pymongo.errors import DuplicateKeyError

from sources.providers.strava.provider import SANDBOX_SUBSCRIPTION_ID
from sources.sandbox.common import (
    bearer_token,
    client_secret_of,
    error_page,
    json_response,
    random_token,
    redirect_valid,
    seeded_random,
    stable_int,
    url_with_query,
)
from sources.sandbox.faults import fault_take, faults_pending
from sources.sandbox.models import SandboxRecord
from sources.sandbox.store import (
    record_create,
    record_delete,
    record_expire,
    record_get,
    record_live,
    record_put,
    record_spend,
    records_of,
)
from sources.sandbox.webhooks import (
    WebhookInputError,
    activity_webhook_send,
    default_receiver,
    deliver,
    json_bytes,
)

NS = "strava"
CODE_LIFETIME = timedelta(minutes=10)
ACCESS_TOKEN_S = 6 * 3600
# A refresh returns the current access token while it has more than this left.
SAME_TOKEN_ABOVE_S = 3600
# Refresh tokens do not expire; they die when used or deauthorized (the store's expiry is how
# a record is spent, so a live one gets a date nobody reaches).
NEVER = timedelta(days=3650)
HISTORY_DAYS = 400
MAX_PER_PAGE = 200
VALIDATION_TIMEOUT_S = 2
# Three attempts in all, as Strava makes.
EVENT_RETRY_DELAYS = (0.1, 0.2)
DEFAULT_USERNAME = "sandbox_athlete"
USERNAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
SCOPE_WORDS = {
    "read": "View data about your public segments, routes, and profile",
    "read_all": "View data about your private routes, segments, and events",
    "profile:read_all": "View your complete Strava profile",
    "profile:write": "Update your weight, FTP and Strava profile",
    "activity:read": "View data about your activities",
    "activity:read_all": "View data about your private activities (Only You)",
    "activity:write": "Upload your activities from this app to Strava",
}
SPORTS = (
    ("Run", "Run", 8000, 0.32),
    ("Ride", "Ride", 30000, 0.14),
    ("MountainBikeRide", "Ride", 22000, 0.2),
    ("Walk", "Walk", 4000, 0.75),
    ("Hike", "Hike", 9000, 0.6),
    ("Swim", "Swim", 1500, 1.2),
    ("WeightTraining", "WeightTraining", 0, 0.0),
    ("Yoga", "Yoga", 0, 0.0),
)
ZONES = (
    ("(GMT-08:00) America/Los_Angeles", -28800),
    ("(GMT-05:00) America/New_York", -18000),
    ("(GMT+00:00) Europe/London", 0),
    ("(GMT+01:00) Europe/Paris", 3600),
    ("(GMT+05:30) Asia/Kolkata", 19800),
)

SCOPES = tuple(SCOPE_WORDS)
fault_names = ("expire_access_token", "new_activity")


# --- Answers --------------------------------------------------------------------------------------


def fault(status: int, message: str, resource: str, field: str, code: str) -> HttpResponse:
    """Strava's error body: a Fault."""
    body = {"message": message, "errors": [{"resource": resource, "field": field, "code": code}]}
    return json_response(body, status=status)


def bad_request(resource: str, field: str, code: str = "invalid") -> HttpResponse:
    return fault(400, "Bad Request", resource, field, code)


def auth_error(resource: str = "Athlete", field: str = "access_token") -> HttpResponse:
    return fault(401, "Authorization Error", resource, field, "invalid")


def server_error() -> HttpResponse:
    return json_response({"message": "Internal Server Error", "errors": []}, status=500)


def _client(request: HttpRequest, params: Any = None) -> str | HttpResponse:
    """The application named by client_id and client_secret, or the Fault to answer."""
    params = params if params is not None else request.POST
    client_id = str(params.get("client_id", ""))
    expected = client_secret_of(client_id)
    if expected is None:
        return bad_request("Application", "client_id")
    if not secrets.compare_digest(expected, str(params.get("client_secret", ""))):
        return fault(401, "Authorization Error", "Application", "client_secret", "invalid")
    return client_id


# --- Athletes -------------------------------------------------------------------------------------


def athlete_id_for(username: str) -> str:
    """An athlete id, stable per username (nine digits, as recent Strava ids)."""
    return str(10**8 + stable_int("strava-athlete", username.lower()) % (9 * 10**8))


def athlete_ensure(username: str) -> SandboxRecord:
    athlete = athlete_id_for(username)
    record = record_get(NS, "athlete", athlete)
    if record is not None:
        return record
    words = [w for w in re.split(r"[._-]+", username) if w] or ["Sandbox"]
    try:
        return record_create(
            NS,
            "athlete",
            athlete,
            account=athlete,
            data={
                "username": username.lower(),
                "firstname": words[0].capitalize(),
                "lastname": " ".join(w.capitalize() for w in words[1:]) or "Athlete",
            },
        )
    except IntegrityError:  # created by a concurrent consent
        return record_get(NS, "athlete", athlete)  # type: ignore[return-value]


def athlete_summary(record: SandboxRecord) -> dict[str, Any]:
    return {
        "id": int(record.key),
        "username": record.data.get("username"),
        "resource_state": 2,
        "firstname": record.data.get("firstname"),
        "lastname": record.data.get("lastname"),
        "city": None,
        "state": None,
        "country": None,
        "sex": None,
        "premium": False,
        "summit": False,
        "created_at": record.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "updated_at": record.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "profile_medium": "avatar/athlete/medium.png",
        "profile": "avatar/athlete/large.png",
    }


# --- Consent page ---------------------------------------------------------------------------------

CONSENT = engines["django"].from_string(
    """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Authorize {{ client_id }} (Sandbox Strava)</title>
  <style>
    body { font-family: system-ui, sans-serif; margin: 0; background: #f7f7fa; color: #242428; }
    main { max-width: 28rem; margin: 3rem auto; background: #fff; border-radius: 8px;
           padding: 2rem; box-shadow: 0 1px 3px rgba(0,0,0,.2); }
    .sandbox { display: inline-block; background: #fc5200; color: #fff; font-weight: 700;
               padding: .15rem .5rem; border-radius: 4px; }
    label { display: block; margin-top: .5rem; }
    .field { font-weight: 600; margin-top: 1rem; }
    input[type=text] { width: 100%; box-sizing: border-box; padding: .5rem; font-size: 1rem; }
    .error { color: #b3261e; }
    .actions { display: flex; gap: 1rem; justify-content: flex-end; margin-top: 1.5rem; }
    button { font-size: 1rem; padding: .5rem 1.25rem; border-radius: 4px; cursor: pointer; }
    button.allow { background: #fc5200; color: #fff; border: 1px solid #fc5200; }
    button.deny { background: #fff; color: #242428; border: 1px solid #ccc; }
    button:focus-visible, input:focus-visible { outline: 3px solid #1a4d8f; outline-offset: 2px; }
  </style>
</head>
<body>
<main>
  <p><span class="sandbox">Sandbox</span> This is the provider sandbox, not Strava.</p>
  <h1>Authorize {{ client_id }} to connect to Strava</h1>
  <form method="post" action="">
    <input type="hidden" name="client_id" value="{{ client_id }}">
    <input type="hidden" name="redirect_uri" value="{{ redirect_uri }}">
    <input type="hidden" name="response_type" value="code">
    <input type="hidden" name="approval_prompt" value="{{ approval_prompt }}">
    <input type="hidden" name="scope" value="{{ scope }}">
    <input type="hidden" name="state" value="{{ state }}">
    <input type="hidden" name="consent_form" value="1">
    <label class="field" for="username">Athlete (username)</label>
    <input id="username" name="username" type="text" value="{{ username }}" required
           {% if username_error %}aria-invalid="true" aria-describedby="username-error"{% endif %}>
    {% if username_error %}
      <p id="username-error" class="error" role="alert">{{ username_error }}</p>
    {% endif %}
    <fieldset>
      <legend>{{ client_id }} asks to</legend>
      {% for scope, words in scopes %}
        <label><input type="checkbox" name="accepted" value="{{ scope }}" checked>
          {{ words }}</label>
      {% endfor %}
    </fieldset>
    <div class="actions">
      <button type="submit" name="decision" value="deny" class="deny" formnovalidate>Cancel</button>
      <button type="submit" name="decision" value="allow" class="allow">Authorize</button>
    </div>
  </form>
</main>
</body>
</html>
"""
)


@csrf_exempt  # Cross-site by design: the form posts back to this fake provider itself.
@require_http_methods(["GET", "POST"])
def authorize(request: HttpRequest) -> HttpResponse:
    """GET shows the consent page; POST (its form) answers with the redirect."""
    params = request.GET if request.method == "GET" else request.POST
    client_id = params.get("client_id", "")
    redirect_uri = params.get("redirect_uri", "")
    if client_secret_of(client_id) is None:
        return error_page(request, "invalid_client", "client_id is invalid.")
    if not redirect_uri or not redirect_valid(redirect_uri):
        return error_page(request, "invalid_request", "redirect_uri is invalid.")
    if params.get("response_type", "") != "code":
        return error_page(request, "invalid_request", "response_type must be code.")
    # Comma-separated, as Strava documents (a space-separated list is one unknown scope).
    requested = [s for s in params.get("scope", "").split(",") if s]
    if not requested or any(s not in SCOPES for s in requested):
        return error_page(request, "invalid_request", "scope is missing or invalid.")
    state = params.get("state", "")
    username = params.get("username", DEFAULT_USERNAME).strip()
    context = {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "approval_prompt": params.get("approval_prompt", "auto"),
        "scope": ",".join(requested),
        "scopes": [(s, SCOPE_WORDS[s]) for s in requested],
        "state": state,
        "username": username,
        "username_error": "",
    }
    if request.method == "GET":
        return HttpResponse(CONSENT.render(context, request))
    state_param = {"state": state} if state else {}
    if params.get("decision") != "allow":
        return HttpResponseRedirect(
            url_with_query(redirect_uri, {**state_param, "error": "access_denied"})
        )
    if not USERNAME.match(username):
        context["username_error"] = "Letters, digits, dots, dashes or underscores (up to 40)."
        return HttpResponse(CONSENT.render(context, request), status=400)
    # Any requested scope may be unticked; the redirect says what was accepted.
    # (A form posted without the page's checkboxes, as tests and scripts do, accepts them all.)
    ticked = set(params.getlist("accepted")) if "consent_form" in params else set(requested)
    accepted = [s for s in requested if s in ticked]
    athlete = athlete_ensure(username)
    code = random_token("", 20).replace("-", "a").replace("_", "b")
    record_create(
        NS,
        "code",
        code,
        account=athlete.key,
        data={"client_id": client_id, "redirect_uri": redirect_uri, "scopes": accepted},
        expires_at=timezone.now() + CODE_LIFETIME,
    )
    return HttpResponseRedirect(
        url_with_query(redirect_uri, {**state_param, "code": code, "scope": ",".join(accepted)})
    )


# --- Tokens ---------------------------------------------------------------------------------------


def _access_issue(athlete: str, client_id: str, scopes: list[str]) -> SandboxRecord:
    return record_create(
        NS,
        "access",
        random_token("", 30),
        account=athlete,
        data={"client_id": client_id, "scopes": scopes},
        expires_at=timezone.now() + timedelta(seconds=ACCESS_TOKEN_S),
    )


def _refresh_issue(athlete: str, client_id: str, scopes: list[str]) -> SandboxRecord:
    return record_create(
        NS,
        "refresh",
        random_token("", 30),
        account=athlete,
        data={"client_id": client_id, "scopes": scopes},
        expires_at=timezone.now() + NEVER,
    )


def _token_body(access: SandboxRecord, refresh: SandboxRecord) -> dict[str, Any]:
    expires_at = int(access.expires_at.timestamp()) if access.expires_at else 0
    return {
        "token_type": "Bearer",
        "expires_at": expires_at,
        "expires_in": max(0, expires_at - int(timezone.now().timestamp())),
        "refresh_token": refresh.key,
        "access_token": access.key,
    }


def _grant_tokens(athlete: str, client_id: str, kind: str) -> list[SandboxRecord]:
    return [
        r
        for r in records_of(NS, athlete, kind)
        if r.data.get("client_id") == client_id and record_live(r)
    ]


@csrf_exempt
@require_POST
def token(request: HttpRequest) -> HttpResponse:
    """``grant_type=authorization_code`` (with the athlete) or ``refresh_token`` (rotating)."""
    client_id = _client(request)
    if isinstance(client_id, HttpResponse):
        return client_id
    grant_type = request.POST.get("grant_type", "")
    if grant_type == "authorization_code":
        code = record_get(NS, "code", request.POST.get("code", ""), live=True)
        if code is None or code.data.get("client_id") != client_id or not record_spend(code):
            return bad_request("AuthorizationCode", "code")
        scopes = list(code.data.get("scopes") or [])
        athlete = record_get(NS, "athlete", code.account)
        if athlete is None:
            return bad_request("AuthorizationCode", "code")
        if _over_athlete_cap(client_id, code.account):
            # The Fault's errors are not documented; the message is what developers report.
            return fault(403, "Limit of connected athletes exceeded", "Athlete", "", "exceeded")
        access = _access_issue(code.account, client_id, scopes)
        refresh = _refresh_issue(code.account, client_id, scopes)
        return json_response({**_token_body(access, refresh), "athlete": athlete_summary(athlete)})
    if grant_type == "refresh_token":
        used = record_get(NS, "refresh", request.POST.get("refresh_token", ""), live=True)
        if used is not None and fault_take(NS, used.account, "server_error"):
            return server_error()
        # Spent at once: of two concurrent refreshes with one token, one gets a new token and
        # the other this 400, as at Strava.
        if used is None or used.data.get("client_id") != client_id or not record_spend(used):
            return bad_request("RefreshToken", "refresh_token")
        scopes = list(used.data.get("scopes") or [])
        current = [
            a
            for a in _grant_tokens(used.account, client_id, "access")
            if a.expires_at and (a.expires_at - timezone.now()).total_seconds() > SAME_TOKEN_ABOVE_S
        ]
        access = current[-1] if current else _access_issue(used.account, client_id, scopes)
        refresh = _refresh_issue(used.account, client_id, scopes)
        return json_response(_token_body(access, refresh))
    return bad_request("Application", "grant_type")


def _over_athlete_cap(client_id: str, athlete: str) -> bool:
    """Whether one more athlete would pass the application's cap (a new application's is one
    athlete until Strava raises it). ``STRAVA_SANDBOX_ATHLETE_CAP`` (a Django setting; 0, the
    default, is no cap) sets it; an athlete already connected always may connect again."""
    cap = int(getattr(settings, "STRAVA_SANDBOX_ATHLETE_CAP", 0) or 0)
    if cap <= 0:
        return False
    now = timezone.now()
    connected = {
        r.account
        for r in SandboxRecord.objects.filter(provider=NS, kind="refresh", expires_at__gt=now)
        if r.data.get("client_id") == client_id
    }
    return athlete not in connected and len(connected) >= cap


def athlete_deauthorize(athlete: str, client_id: str | None = None) -> int:
    """End every live token of the athlete (for one application, or all); how many ended."""
    now = timezone.now()
    ended = 0
    for kind in ("access", "refresh"):
        for record in records_of(NS, athlete, kind):
            if record_live(record) and client_id in (None, record.data.get("client_id")):
                record_expire(record, now)
                ended += 1
    return ended


@csrf_exempt
@require_POST
def deauthorize(request: HttpRequest) -> HttpResponse:
    """``access_token`` (form, query or bearer): every token of the athlete for the app ends."""
    value = request.POST.get("access_token") or bearer_token(request) or ""
    access = record_get(NS, "access", value, live=True)
    if access is None:
        return auth_error()
    if fault_take(NS, access.account, "server_error"):
        return server_error()
    athlete_deauthorize(access.account, access.data.get("client_id"))
    return json_response({"access_token": value})


# --- Rate limits ----------------------------------------------------------------------------------


def _limits(name: str, default: str) -> tuple[int, int]:
    text = str(getattr(settings, name, default))
    short, _, daily = text.partition(",")
    return int(short), int(daily)


def usage_count(client_id: str, *, now: datetime | None = None) -> dict[str, tuple[int, int]]:
    """Count one request of the application (every API call reads); {bucket: (15 min, day)}."""
    now = (now or timezone.now()).astimezone(UTC)
    quarter = f"q{(now.hour * 60 + now.minute) // 15}"
    key = f"{client_id}:{now.date().isoformat()}"
    alias = router.db_for_write(SandboxRecord)
    collection = connections[alias].get_collection(SandboxRecord._meta.db_table)
    increments = {f"data.{b}.{w}": 1 for b in ("overall", "read") for w in (quarter, "day")}
    for _attempt in range(3):  # the first two calls of a day may both insert
        try:
            collection.update_one(
                {"provider": NS, "kind": "usage", "key": key},
                {
                    "$inc": increments,
                    "$setOnInsert": {
                        "account": client_id,
                        "created_at": now,
                        "expires_at": now + timedelta(days=2),
                    },
                },
                upsert=True,
            )
            break
        except DuplicateKeyError:
            continue
    stored = collection.find_one({"provider": NS, "kind": "usage", "key": key}) or {}
    data = stored.get("data") or {}
    return {
        bucket: (int(data.get(bucket, {}).get(quarter, 0)), int(data.get(bucket, {}).get("day", 0)))
        for bucket in ("overall", "read")
    }


def usage_headers(usage: dict[str, tuple[int, int]]) -> tuple[dict[str, str], bool]:
    """The rate-limit headers, and whether any window is over its limit."""
    limits = {
        "overall": _limits("STRAVA_SANDBOX_RATE_LIMIT", "200,2000"),
        "read": _limits("STRAVA_SANDBOX_READ_RATE_LIMIT", "100,1000"),
    }
    headers = {}
    over = False
    for bucket, prefix in (("overall", "X-RateLimit"), ("read", "X-ReadRateLimit")):
        (short_limit, daily_limit), (short_used, daily_used) = limits[bucket], usage[bucket]
        headers[f"{prefix}-Limit"] = f"{short_limit},{daily_limit}"
        headers[f"{prefix}-Usage"] = f"{short_used},{daily_used}"
        over = over or short_used > short_limit or daily_used > daily_limit
    return headers, over


def rate_limited() -> HttpResponse:
    return fault(429, "Rate Limit Exceeded", "Application", "rate limit", "exceeded")


# --- Activities -----------------------------------------------------------------------------------


def _zone(athlete: str) -> tuple[str, int]:
    return ZONES[stable_int("strava-zone", athlete) % len(ZONES)]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def activity_build(athlete: str, seed: str, start: datetime) -> dict[str, Any]:
    """One SummaryActivity, every value drawn from ``seed``."""
    rng = seeded_random("strava-activity", athlete, seed)
    sport, legacy, distance, climb = SPORTS[rng.randrange(len(SPORTS))]
    zone, offset = _zone(athlete)
    local = start + timedelta(seconds=offset)
    moving = rng.randint(20 * 60, 110 * 60)
    part = "Morning" if local.hour < 12 else "Afternoon" if local.hour < 18 else "Evening"
    distance_m = round(distance * rng.uniform(0.5, 1.6), 1) if distance else 0.0
    heart = rng.random() < 0.7
    only_me = rng.random() < 0.1
    activity_id = 2**53 + stable_int("strava-activity-id", athlete, seed) % 10**12
    body: dict[str, Any] = {
        "resource_state": 2,
        "athlete": {"id": int(athlete), "resource_state": 1},
        "name": f"{part} {sport}",
        "distance": distance_m,
        "moving_time": moving,
        "elapsed_time": moving + rng.randint(0, 15 * 60),
        "total_elevation_gain": round(distance_m / 1000 * climb * rng.uniform(5, 20), 1),
        "type": legacy,
        "sport_type": sport,
        "workout_type": None,
        "id": activity_id,
        "start_date": _iso(start),
        "start_date_local": local.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "timezone": zone,
        "utc_offset": float(offset),
        "achievement_count": rng.randint(0, 3),
        "kudos_count": rng.randint(0, 12),
        "comment_count": rng.randint(0, 2),
        "athlete_count": 1,
        "photo_count": 0,
        "map": {
            "id": f"a{activity_id}",
            # Null or empty for indoor activities, as Strava sends either.
            "summary_polyline": rng.choice([None, "", "ki{eFvqfiVqAWQIGEEKAYJgBVqDJ{BHa@"]),
            "resource_state": 2,
        },
        "trainer": distance_m == 0,
        "commute": False,
        "manual": False,
        "private": only_me,
        "visibility": "only_me" if only_me else rng.choice(["everyone", "followers_only"]),
        "flagged": False,
        "has_heartrate": heart,
        "pr_count": 0,
    }
    if heart:
        average = round(rng.uniform(110, 160), 1)
        body.update(
            average_heartrate=average, max_heartrate=float(int(average + rng.randint(10, 30)))
        )
    return body


def _seeded_on(athlete: str, day: date, now: datetime) -> list[dict[str, Any]]:
    rng = seeded_random("strava-day", athlete, day.isoformat())
    if rng.random() > 0.6:
        return []
    count = 2 if rng.random() < 0.1 else 1
    activities = []
    for n in range(count):
        start = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(
            hours=rng.randint(5, 20) + 3 * n, minutes=rng.randint(0, 59), seconds=rng.randint(0, 59)
        )
        if start <= now:
            activities.append(activity_build(athlete, f"{day.isoformat()}#{n}", start))
    return activities


def activities_of(athlete: str, *, after: int | None, before: int | None) -> list[dict[str, Any]]:
    """The athlete's activities that started after ``after`` and before ``before``
    (epoch seconds), oldest first: the seeded history, with what the controls created,
    changed and deleted."""
    now = timezone.now()
    record = record_get(NS, "athlete", athlete)
    created = record.created_at if record else now
    first = (created - timedelta(days=HISTORY_DAYS)).date()
    if after is not None:
        first = max(first, datetime.fromtimestamp(after, UTC).date())
    last = now.date()
    if before is not None:
        last = min(last, datetime.fromtimestamp(before, UTC).date())
    found: dict[int, dict[str, Any]] = {}
    day = first
    while day <= last:
        for activity in _seeded_on(athlete, day, now):
            found[activity["id"]] = activity
        day += timedelta(days=1)
    for changed in records_of(NS, athlete, "activity"):
        activity = dict(changed.data)
        found[activity["id"]] = activity
    for gone in records_of(NS, athlete, "deleted"):
        found.pop(int(gone.key), None)

    def start_of(activity: dict[str, Any]) -> int:
        return int(
            datetime.fromisoformat(activity["start_date"].replace("Z", "+00:00")).timestamp()
        )

    chosen = [
        a
        for a in found.values()
        if (after is None or start_of(a) > after) and (before is None or start_of(a) < before)
    ]
    return sorted(chosen, key=lambda a: (start_of(a), a["id"]))


def activity_find(athlete: str, activity_id: int) -> dict[str, Any] | None:
    return next(
        (a for a in activities_of(athlete, after=None, before=None) if a["id"] == activity_id), None
    )


# --- The API --------------------------------------------------------------------------------------


class Caller:
    def __init__(self, access: SandboxRecord) -> None:
        self.athlete = access.account
        self.client_id = str(access.data.get("client_id", ""))
        self.scopes = set(access.data.get("scopes") or [])
        self.malformed = False  # the next page carries broken items (the `malformed` fault)


def api_view(view: Callable[[HttpRequest, Caller], HttpResponse]) -> Callable[..., HttpResponse]:
    """Bearer check, faults and the application's rate limits, for every API call."""

    def wrapped(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        access = record_get(NS, "access", bearer_token(request) or "", live=True)
        if access is None:
            return auth_error()
        caller = Caller(access)
        headers, over = usage_headers(usage_count(caller.client_id))
        pending = faults_pending(NS, caller.athlete)
        if over or fault_take(NS, caller.athlete, "rate_limit", pending):
            answer = rate_limited()
        elif fault_take(NS, caller.athlete, "server_error", pending):
            answer = server_error()
        else:
            caller.malformed = fault_take(NS, caller.athlete, "malformed", pending)
            answer = view(request, caller, **kwargs)
        for name, value in headers.items():
            answer[name] = value
        return answer

    wrapped.__name__ = view.__name__
    return csrf_exempt(require_GET(wrapped))


def _int_param(request: HttpRequest, name: str) -> int | None:
    value = request.GET.get(name)
    if value in (None, ""):
        return None
    if not value.lstrip("-").isdigit() or len(value) > 12:
        raise ValueError(name)
    return int(value)


@api_view
def athlete_get(request: HttpRequest, caller: Caller) -> HttpResponse:
    record = record_get(NS, "athlete", caller.athlete)
    if record is None:
        return fault(404, "Record Not Found", "Athlete", "id", "invalid")
    return json_response(athlete_summary(record))


@api_view
def activities_list(request: HttpRequest, caller: Caller) -> HttpResponse:
    if not caller.scopes & {"activity:read", "activity:read_all"}:
        return fault(
            401, "Authorization Error", "AccessToken", "activity:read_permission", "missing"
        )
    try:
        after, before = _int_param(request, "after"), _int_param(request, "before")
        page = _int_param(request, "page")
        per_page = _int_param(request, "per_page")
        page = 1 if page is None else page
        per_page = 30 if per_page is None else per_page
    except ValueError as err:
        return bad_request("Application", str(err))
    if page < 1 or per_page < 1:
        return bad_request("Application", "page" if page < 1 else "per_page")
    per_page = min(per_page, MAX_PER_PAGE)
    activities = activities_of(caller.athlete, after=after, before=before)
    if after is None:
        activities.reverse()  # newest first, unless listing from a time onwards
    chunk = activities[(page - 1) * per_page : page * per_page]
    if "activity:read_all" not in caller.scopes:
        # Hidden from the page, not before paging: a page can come back short while more
        # follow, as Strava's documentation warns (only an empty page ends the list).
        chunk = [a for a in chunk if a.get("visibility") != "only_me"]
    if caller.malformed and chunk:
        chunk = [*chunk, {"id": "broken", "start_date": "yesterday"}, {"id": 2**53 + 1}]
    return json_response(chunk)


@api_view
def activity_get(request: HttpRequest, caller: Caller, activity_id: str) -> HttpResponse:
    activity = activity_find(caller.athlete, int(activity_id)) if activity_id.isdigit() else None
    if activity is None or (
        activity.get("visibility") == "only_me" and "activity:read_all" not in caller.scopes
    ):
        return fault(404, "Record Not Found", "Activity", "id", "invalid")
    rng = seeded_random("strava-detail", activity["id"])
    return json_response(
        {
            **activity,
            "resource_state": 3,
            "description": None,
            "calories": round(rng.uniform(150, 900), 1),
        }
    )


# --- Push subscriptions and events ----------------------------------------------------------------


def subscription_of(client_id: str) -> SandboxRecord | None:
    return record_get(NS, "subscription", client_id)


def subscription_create(client_id: str, callback_url: str, verify_token: str) -> SandboxRecord:
    """Validate the callback as Strava does, then keep the application's one subscription.

    Raises WebhookInputError with Strava's reason when the callback does not echo the challenge
    within two seconds or a subscription exists."""
    if subscription_of(client_id) is not None:
        raise WebhookInputError("already exists")
    if len(callback_url) > 255 or not redirect_valid(callback_url):
        raise WebhookInputError("callback url invalid")
    challenge = random_token("", 16)
    query = {"hub.mode": "subscribe", "hub.challenge": challenge, "hub.verify_token": verify_token}
    try:
        answer = requests.get(
            url_with_query(callback_url, query), timeout=VALIDATION_TIMEOUT_S, allow_redirects=False
        )
        echoed = answer.status_code == 200 and answer.json().get("hub.challenge") == challenge
    except (requests.RequestException, ValueError, AttributeError):
        echoed = False
    if not echoed:
        raise WebhookInputError("GET to callback URL does not return 200")
    return record_put(
        NS,
        "subscription",
        client_id,
        account=client_id,
        data={"id": int(SANDBOX_SUBSCRIPTION_ID), "callback_url": callback_url},
    )


@csrf_exempt
@require_http_methods(["GET", "POST"])
def push_subscriptions(request: HttpRequest) -> HttpResponse:
    """POST creates the subscription (validating the callback); GET lists it."""
    client_id = _client(request, request.POST if request.method == "POST" else request.GET)
    if isinstance(client_id, HttpResponse):
        return client_id
    if request.method == "GET":
        sub = subscription_of(client_id)
        return json_response([_subscription_view(sub)] if sub else [])
    try:
        sub = subscription_create(
            client_id,
            request.POST.get("callback_url", ""),
            request.POST.get("verify_token", ""),
        )
    except WebhookInputError as err:
        return bad_request("PushSubscription", "callback url", str(err))
    return json_response({"id": sub.data["id"]}, status=201)


@csrf_exempt
@require_http_methods(["DELETE"])
def push_subscription_delete(request: HttpRequest, subscription_id: str) -> HttpResponse:
    client_id = _client(request, request.GET)
    if isinstance(client_id, HttpResponse):
        return client_id
    sub = subscription_of(client_id)
    if sub is None or str(sub.data.get("id")) != subscription_id:
        return fault(404, "Record Not Found", "PushSubscription", "id", "invalid")
    record_delete(NS, "subscription", client_id)
    return HttpResponse(status=204)


def _subscription_view(sub: SandboxRecord) -> dict[str, Any]:
    return {
        "id": sub.data["id"],
        "resource_state": 2,
        "application_id": stable_int("strava-app", sub.key) % 100000,
        "callback_url": sub.data["callback_url"],
        "created_at": _iso(sub.created_at),
        "updated_at": _iso(sub.created_at),
    }


def event_send(
    client_id: str,
    event: dict[str, Any],
    *,
    receiver_url: str | None = None,
    duplicate: bool = False,
) -> list[int]:
    """POST an event to the application's subscription (subscribing ``receiver_url`` first when
    there is none): no signature, three attempts, as Strava."""
    sub = subscription_of(client_id)
    if sub is None:
        if receiver_url is None:
            return []
        sub = subscription_create(
            client_id, receiver_url, str(getattr(settings, "STRAVA_WEBHOOK_VERIFY_TOKEN", ""))
        )
    body = {
        "event_time": int(timezone.now().timestamp()),
        "subscription_id": sub.data["id"],
        "updates": {},
        **event,
    }
    return deliver(
        sub.data["callback_url"],
        json_bytes(body),
        {"Content-Type": "application/json"},
        duplicate=duplicate,
        retry_delays=EVENT_RETRY_DELAYS,
    )


def _sandbox_client() -> str:
    from sources.providers.strava.provider import Strava

    return Strava.credentials["client_id"]


def activity_add(athlete: str, *, seed: str | None = None) -> dict[str, Any]:
    """A new activity that just ended, as if uploaded now."""
    seed = seed or random_token("new-", 8)
    start = timezone.now().replace(microsecond=0) - timedelta(hours=1)
    activity = activity_build(athlete, seed, start)
    activity["visibility"], activity["private"] = "everyone", False
    record_put(NS, "activity", str(activity["id"]), account=athlete, data=activity)
    return activity


# --- Faults ---------------------------------------------------------------------------------------


def fault_apply(account: str, fault_name: str, count: int) -> bool:
    """Faults applied at once: ``revoke``, ``expire_access_token``, ``new_activity``."""
    if fault_name == "revoke":
        athlete_deauthorize(account)
        return True
    if fault_name == "expire_access_token":
        now = timezone.now()
        for record in records_of(NS, account, "access"):
            if record_live(record):
                record_expire(record, now)
        return True
    if fault_name == "new_activity":
        added = [activity_add(account) for _ in range(count)]

        def send() -> list[int]:
            statuses: list[int] = []
            for activity in added:
                statuses += event_send(
                    _sandbox_client(),
                    {
                        "object_type": "activity",
                        "aspect_type": "create",
                        "object_id": activity["id"],
                        "owner_id": int(account),
                    },
                    receiver_url=default_receiver(NS),
                )
            return statuses

        activity_webhook_send(send)
        return True
    return False


# --- Webhook controls (POST /sandbox/_webhooks) ---------------------------------------------------


def _athlete_arg(body: dict) -> str:
    athlete = str(body.get("athlete", ""))
    if not athlete.isdigit() or record_get(NS, "athlete", athlete) is None:
        raise WebhookInputError("athlete must be the id of an athlete who consented")
    return athlete


def _activity_arg(body: dict, athlete: str) -> int:
    value = body.get("activity_id")
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        raise WebhookInputError("activity_id is required (an integer)")
    return int(value)


def control_subscribe(body: dict, receiver_url: str) -> dict:
    """``callback_url`` (default: this app's receiver), ``verify_token`` (default: the
    configured one): create the subscription, validating the callback."""
    callback = str(body.get("callback_url") or receiver_url)
    verify = str(body.get("verify_token") or getattr(settings, "STRAVA_WEBHOOK_VERIFY_TOKEN", ""))
    sub = subscription_create(_sandbox_client(), callback, verify)
    return {"subscription_id": sub.data["id"], "callback_url": callback}


def control_activity_create(body: dict, receiver_url: str) -> dict:
    """``athlete``: a new activity, then its create event."""
    athlete = _athlete_arg(body)
    activity = activity_add(athlete)
    statuses = event_send(
        _sandbox_client(),
        {
            "object_type": "activity",
            "aspect_type": "create",
            "object_id": activity["id"],
            "owner_id": int(athlete),
        },
        receiver_url=receiver_url,
        duplicate=bool(body.get("duplicate", False)),
    )
    return {"statuses": statuses, "activity_id": activity["id"]}


def control_activity_update(body: dict, receiver_url: str) -> dict:
    """``athlete``, ``activity_id``, ``title`` (optional): rename it, then its update event."""
    athlete = _athlete_arg(body)
    activity_id = _activity_arg(body, athlete)
    activity = activity_find(athlete, activity_id)
    if activity is None:
        raise WebhookInputError("no such activity")
    title = str(body.get("title") or f"{activity['name']} (edited)")
    record_put(NS, "activity", str(activity_id), account=athlete, data={**activity, "name": title})
    statuses = event_send(
        _sandbox_client(),
        {
            "object_type": "activity",
            "aspect_type": "update",
            "object_id": activity_id,
            "owner_id": int(athlete),
            "updates": {"title": title},
        },
        receiver_url=receiver_url,
    )
    return {"statuses": statuses}


def control_activity_delete(body: dict, receiver_url: str) -> dict:
    """``athlete``, ``activity_id``: delete it, then its delete event."""
    athlete = _athlete_arg(body)
    activity_id = _activity_arg(body, athlete)
    record_delete(NS, "activity", str(activity_id))
    record_put(NS, "deleted", str(activity_id), account=athlete)
    statuses = event_send(
        _sandbox_client(),
        {
            "object_type": "activity",
            "aspect_type": "delete",
            "object_id": activity_id,
            "owner_id": int(athlete),
        },
        receiver_url=receiver_url,
    )
    return {"statuses": statuses}


def control_deauthorize(body: dict, receiver_url: str) -> dict:
    """``athlete``: the athlete revokes the application in their settings; every token ends,
    then the athlete update event with ``{"authorized": "false"}``."""
    athlete = _athlete_arg(body)
    athlete_deauthorize(athlete, _sandbox_client())
    statuses = event_send(
        _sandbox_client(),
        {
            "object_type": "athlete",
            "aspect_type": "update",
            "object_id": int(athlete),
            "owner_id": int(athlete),
            "updates": {"authorized": "false"},
        },
        receiver_url=receiver_url,
    )
    return {"statuses": statuses}


webhook_controls = {
    "activity_create": control_activity_create,
    "activity_update": control_activity_update,
    "activity_delete": control_activity_delete,
    "deauthorize": control_deauthorize,
    "subscribe": control_subscribe,
}

urlpatterns = [
    path("strava/oauth/authorize", authorize, name="strava-authorize"),
    path("strava/oauth/token", token, name="strava-token"),
    path("strava/oauth/deauthorize", deauthorize, name="strava-deauthorize"),
    path("strava/api/v3/athlete", athlete_get, name="strava-athlete"),
    path("strava/api/v3/athlete/activities", activities_list, name="strava-activities"),
    path("strava/api/v3/activities/<str:activity_id>", activity_get, name="strava-activity"),
    path("strava/api/v3/push_subscriptions", push_subscriptions, name="strava-subscriptions"),
    path(
        "strava/api/v3/push_subscriptions/<str:subscription_id>",
        push_subscription_delete,
        name="strava-subscription",
    ),
]
