from datetime import UTC, datetime, timedelta

import pytest

from sources.providers.fitbit.provider import Fitbit
from sources.sandbox.faults import fault_set
from tests.sources.sandbox.oauth import EMAIL, bearer, google_client, google_tokens

from .conftest import HEALTH

FITBIT_CLIENT = google_client(Fitbit)

pytestmark = pytest.mark.django_db

API = "/sandbox/google/health/v4/users/me"


@pytest.fixture
def auth(health_token):
    return bearer(health_token["access_token"])


def points(client, auth, data_type, **params):
    response = client.get(f"{API}/dataTypes/{data_type}/dataPoints", params, **auth)
    assert response.status_code == 200, response.content
    return response.json()


def iso(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_identity(client, auth):
    body = client.get(f"{API}/identity", **auth).json()
    assert body["healthUserId"].isdigit()
    assert len(body["legacyUserId"]) == 6
    assert body["name"] == f"users/{body['healthUserId']}/identity"
    by_id = client.get(f"/sandbox/google/health/v4/users/{body['healthUserId']}/identity", **auth)
    assert by_id.status_code == 200


def test_steps_filter_newest_first_and_paging(client, auth):
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=3)
    flt = (
        f'steps.interval.start_time >= "{iso(start)}" AND steps.interval.start_time < "{iso(end)}"'
    )
    everything = points(client, auth, "steps", filter=flt)
    items = everything["dataPoints"]
    assert everything["nextPageToken"] == ""
    assert 100 < len(items) <= 3 * 96
    starts = [p["steps"]["interval"]["startTime"] for p in items]
    assert starts == sorted(starts, reverse=True)
    assert all(iso(start) <= s < iso(end) for s in starts)
    sample = items[0]
    assert "name" not in sample
    assert isinstance(sample["steps"]["count"], str) and sample["steps"]["count"].isdigit()
    interval = sample["steps"]["interval"]
    assert interval["startUtcOffset"].endswith("s")
    assert set(interval["civilStartTime"]) == {"date", "time"}

    collected, token = [], None
    while True:
        page = points(
            client,
            auth,
            "steps",
            filter=flt,
            pageSize=50,
            **({"pageToken": token} if token else {}),
        )
        collected += page["dataPoints"]
        token = page["nextPageToken"]
        if not token:
            break
        assert len(page["dataPoints"]) == 50
    assert collected == items


def test_civil_filters_daily_types_and_page_size_caps(client, auth):
    today = datetime.now(UTC).date()
    day = (today - timedelta(days=5)).isoformat()
    nxt = (today - timedelta(days=4)).isoformat()
    hr = points(
        client,
        auth,
        "heart-rate",
        filter=(
            f'heart_rate.sample_time.civil_time >= "{day}" '
            f'AND heart_rate.sample_time.civil_time < "{nxt}"'
        ),
    )["dataPoints"]
    assert len(hr) == 288
    assert all(
        p["heartRate"]["sampleTime"]["civilTime"]["date"]["day"] == int(day[-2:]) for p in hr
    )
    assert hr[0]["heartRate"]["beatsPerMinute"].isdigit()

    resting = points(
        client, auth, "daily-resting-heart-rate", filter=f'daily_resting_heart_rate.date >= "{day}"'
    )
    assert 1 <= len(resting["dataPoints"]) <= 6  # the account's local day may lead UTC
    assert "date" in resting["dataPoints"][0]["dailyRestingHeartRate"]

    capped = points(client, auth, "heart-rate", pageSize=20000)
    assert len(capped["dataPoints"]) == 10000 and capped["nextPageToken"]
    default = points(client, auth, "heart-rate")
    assert len(default["dataPoints"]) == 1440

    active = points(client, auth, "active-minutes", pageSize=5)["dataPoints"]
    assert active[0]["activeMinutes"]["activeMinutesByActivityLevel"]


def test_sleep_sessions_cross_midnight_and_page_by_25(client, auth):
    page = points(client, auth, "sleep")
    sessions = page["dataPoints"]
    assert len(sessions) == 25 and page["nextPageToken"]
    crossing = 0
    for point in sessions:
        assert (
            point["name"].startswith("users/") and "/dataTypes/sleep/dataPoints/" in point["name"]
        )
        sleep = point["sleep"]
        civil_start, civil_end = (
            sleep["interval"]["civilStartTime"],
            sleep["interval"]["civilEndTime"],
        )
        crossing += civil_start["date"] != civil_end["date"]
        assert sleep["stages"][0]["startTime"] == sleep["interval"]["startTime"]
        assert sleep["stages"][-1]["endTime"] == sleep["interval"]["endTime"]
        assert int(sleep["summary"]["minutesAsleep"]) > 0 and sleep["summary"]["stagesSummary"]
    assert crossing > 10
    second = points(client, auth, "sleep", pageToken=page["nextPageToken"])["dataPoints"]
    assert (
        second[0]["sleep"]["interval"]["startTime"] < sessions[-1]["sleep"]["interval"]["startTime"]
    )

    since = (datetime.now(UTC) - timedelta(days=3)).date().isoformat()
    before = (datetime.now(UTC) - timedelta(days=10)).date().isoformat()
    recent = points(
        client,
        auth,
        "sleep",
        filter=(
            f'sleep.interval.civil_end_time >= "{since}" '
            f'OR sleep.interval.civil_end_time < "{before}"'
        ),
        pageSize=100,
    )["dataPoints"]
    assert len(recent) == 25  # capped
    assert (
        client.get(
            f"{API}/dataTypes/sleep/dataPoints?dataSourceFamily=users/me/dataSourceFamilies/all-sources",
            **auth,
        ).status_code
        == 400
    )


@pytest.mark.parametrize(
    ("data_type", "flt", "reason"),
    [
        ("steps", "steps.interval.start_time >= 2024-01-01T00:00:00Z", "INVALID_FILTER_FORMAT"),
        (
            "steps",
            'steps.interval.start_time = "2024-01-01T00:00:00Z"',
            "INVALID_DATA_POINT_FILTER",
        ),
        (
            "steps",
            'heart-rate.sample_time.physical_time >= "2024-01-01T00:00:00Z"',
            "INVALID_DATA_POINT_FILTER",
        ),
        ("steps", 'steps.interval.start_time >= "yesterday"', "INVALID_DATA_POINT_FILTER"),
        (
            "sleep",
            'sleep.interval.start_time >= "2024-01-01T00:00:00Z"',
            "INVALID_DATA_POINT_FILTER",
        ),
        (
            "steps",
            'steps.interval.start_time >= "2024-01-01T00:00:00Z" '
            'OR steps.interval.start_time < "2024-01-02T00:00:00Z"',
            "INVALID_DATA_POINT_FILTER",
        ),
        (
            "steps",
            'steps.interval.start_time >= "2024-01-01T00:00:00Z" AND',
            "INVALID_FILTER_FORMAT",
        ),
    ],
)
def test_bad_filters_are_invalid_argument(client, auth, data_type, flt, reason):
    response = client.get(f"{API}/dataTypes/{data_type}/dataPoints", {"filter": flt}, **auth)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["details"][0]["reason"] == reason


def test_bad_page_token_and_unknown_type(client, auth):
    assert (
        client.get(f"{API}/dataTypes/steps/dataPoints?pageToken=garbage", **auth).status_code == 400
    )
    assert client.get(f"{API}/dataTypes/no-such-type/dataPoints", **auth).status_code == 404
    assert client.get(f"{API}/dataTypes/steps/dataPoints?pageSize=-1", **auth).status_code == 400


def test_scopes_per_data_type_and_write_only_scopes_do_not_read(client):
    sleep_only = google_tokens(client, scope=f"{HEALTH}sleep.readonly", client_pair=FITBIT_CLIENT)
    auth = bearer(sleep_only["access_token"])
    assert client.get(f"{API}/dataTypes/sleep/dataPoints", **auth).status_code == 200
    denied = client.get(f"{API}/dataTypes/steps/dataPoints", **auth)
    assert denied.status_code == 403
    assert denied.json()["error"]["details"][0]["reason"] == "ACCESS_TOKEN_SCOPE_INSUFFICIENT"
    # Since 2026-05-26 the suffix-less scope is `.writeonly` by another name: neither reads.
    for write_only in ("activity_and_fitness", "activity_and_fitness.writeonly"):
        token = google_tokens(client, scope=f"{HEALTH}{write_only}", client_pair=FITBIT_CLIENT)
        refused = client.get(
            f"{API}/dataTypes/steps/dataPoints?pageSize=1", **bearer(token["access_token"])
        )
        assert refused.status_code == 403, write_only
    identity_only = google_tokens(client, scope="openid email", client_pair=FITBIT_CLIENT)
    assert client.get(f"{API}/identity", **bearer(identity_only["access_token"])).status_code == 403


def test_malformed_and_rate_limit_faults(client, auth):
    fault_set("google", EMAIL, "malformed")
    broken = points(client, auth, "steps", pageSize=5)["dataPoints"]
    assert broken[0]["steps"]["count"] == "n/a"
    assert "interval" not in broken[1]["steps"]
    assert points(client, auth, "steps", pageSize=5)["dataPoints"][0]["steps"]["count"].isdigit()
    fault_set("google", EMAIL, "rate_limit")
    limited = client.get(f"{API}/dataTypes/steps/dataPoints", **auth)
    assert limited.status_code == 429 and "Retry-After" in limited
    fault_set("google", EMAIL, "server_error")
    assert client.get(f"{API}/identity", **auth).status_code == 503


def test_daily_roll_up_for_steps(client, auth):
    day = (datetime.now(UTC) - timedelta(days=3)).date()
    end = day + timedelta(days=2)
    body = {
        "range": {
            "start": {"date": {"year": day.year, "month": day.month, "day": day.day}},
            "end": {"date": {"year": end.year, "month": end.month, "day": end.day}},
        },
        "windowSizeDays": 1,
    }
    response = client.post(
        f"{API}/dataTypes/steps/dataPoints:dailyRollUp",
        body,
        content_type="application/json",
        **auth,
    )
    assert response.status_code == 200
    rollups = response.json()["rollupDataPoints"]
    assert len(rollups) == 2 and int(rollups[0]["steps"]["countSum"]) > 0


def test_bad_input_is_a_google_error_never_a_500(client, auth):
    base = f"{API}/dataTypes"
    for flt in [
        'steps.interval.civil_start_time >= "9999-12-31"',
        'steps.interval.civil_start_time < "0001-01-01"',
        'steps.interval.start_time >= "9999-12-31T23:59:59Z"',
        '(steps.interval.start_time >= "2024-01-01T00:00:00Z"',
        ")",
        '"',
        "AND AND",
        'steps.interval.civil_start_time >= "2024-01-01T25:00"',
    ]:
        response = client.get(f"{base}/steps/dataPoints", {"filter": flt}, **auth)
        assert response.status_code in (200, 400), flt
    for token in ["e30", "W10", "eyJrIjpbMSwiYSJdLCJmIjoxfQ"]:
        response = client.get(f"{base}/steps/dataPoints", {"pageToken": token}, **auth)
        assert response.status_code == 400
    for body in ["[]", "{}", '{"range": {"start": {"date": {"year": "x"}}, "end": 5}}']:
        response = client.post(
            f"{base}/steps/dataPoints:dailyRollUp", body, content_type="application/json", **auth
        )
        assert response.status_code == 400, body


def test_consent_page_describes_the_scopes_in_words(client):
    page = client.get(
        "/sandbox/google/o/oauth2/v2/auth",
        {
            "client_id": FITBIT_CLIENT[0],
            "redirect_uri": "http://testserver/complete/",
            "response_type": "code",
            "scope": f"openid email {HEALTH}sleep.readonly",
        },
    )
    assert "See your Google Health sleep data" in page.content.decode()
