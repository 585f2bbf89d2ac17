import csv
import io
from datetime import date, timedelta

import pytest

from sources.sandbox.faults import fault_clear, fault_set

pytestmark = pytest.mark.django_db

DATA = "/sandbox/rescuetime/anapi/data"
FEED = "/sandbox/rescuetime/anapi/daily_summary_feed"
KEY = "sandbox-abc123"
KEY_NOT_FOUND = {"error": "# key not found", "messages": "key not found"}
QUERY_ERROR = {
    "error": "# query error",
    "messages": "Error: Likely a badly formatted or missing parameter",
}


def week():
    end = date.today() - timedelta(days=1)
    return {
        "restrict_begin": (end - timedelta(days=6)).isoformat(),
        "restrict_end": end.isoformat(),
    }


def test_unknown_key_and_bad_query_are_http_200_errors(client):
    unknown = client.get(DATA, {"key": "real-looking-key", "format": "json"})
    assert unknown.status_code == 200 and unknown.json() == KEY_NOT_FOUND
    assert client.get(FEED, {"key": "nope"}).json() == KEY_NOT_FOUND
    for params in (
        {"format": "xml"},
        {"format": "json", "perspective": "sideways"},
        {"format": "json", "restrict_kind": "everything"},
        {"format": "json", "restrict_begin": "yesterday"},
        {"format": "json", "restrict_begin": "2024-02-01", "restrict_end": "2024-01-01"},
    ):
        response = client.get(DATA, {"key": KEY, **params})
        assert response.status_code == 200 and response.json() == QUERY_ERROR, params


def test_interval_activity_rows(client):
    body = client.get(
        DATA,
        {
            "key": KEY,
            "format": "json",
            "perspective": "interval",
            "resolution_time": "hour",
            "restrict_kind": "activity",
            **week(),
        },
    ).json()
    assert body["row_headers"] == [
        "Date",
        "Time Spent (seconds)",
        "Number of People",
        "Activity",
        "Category",
        "Productivity",
    ]
    assert body["notes"] and len(body["rows"]) > 20
    row = body["rows"][0]
    assert (
        len(row[0]) == 19 and row[0][10] == "T" and "+" not in row[0] and not row[0].endswith("Z")
    )
    assert isinstance(row[1], int) and row[2] == 1 and -2 <= row[5] <= 2
    dates = [r[0] for r in body["rows"]]
    assert dates == sorted(dates)
    same = client.get(
        DATA,
        {
            "key": KEY,
            "format": "json",
            "by": "interval",
            "interval": "hour",
            "restrict_kind": "activity",
            **week(),
        },
    ).json()
    assert same == body  # aliases, and deterministic


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        ("overview", ["Category"]),
        ("category", ["Category"]),
        ("productivity", ["Productivity"]),
        ("efficiency", ["Efficiency (percent)"]),
        ("document", ["Document", "Activity", "Category", "Productivity"]),
    ],
)
def test_rank_columns_by_kind(client, kind, columns):
    body = client.get(DATA, {"key": KEY, "format": "json", "restrict_kind": kind, **week()}).json()
    assert body["row_headers"] == ["Rank", "Time Spent (seconds)", "Number of People", *columns]
    assert [r[0] for r in body["rows"]] == list(range(1, len(body["rows"]) + 1))
    seconds = [r[1] for r in body["rows"]]
    assert seconds == sorted(seconds, reverse=True)


def test_minute_resolution_and_csv(client):
    params = {
        "key": KEY,
        "perspective": "interval",
        "resolution_time": "minute",
        "restrict_kind": "productivity",
        **week(),
    }
    rows = client.get(DATA, {**params, "format": "json"}).json()["rows"]
    assert all(r[0][14:16] in {f"{m:02d}" for m in range(0, 60, 5)} for r in rows)
    assert all(r[1] <= 300 for r in rows)
    response = client.get(DATA, {**params, "format": "csv"})
    assert response["Content-Type"].startswith("text/csv")
    parsed = list(csv.reader(io.StringIO(response.content.decode())))
    assert parsed[0] == ["Date", "Time Spent (seconds)", "Number of People", "Productivity"]
    assert len(parsed) == len(rows) + 1


def test_daily_summary_feed(client):
    entries = client.get(FEED, {"key": KEY}).json()
    assert len(entries) == 14
    dates = [e["date"] for e in entries]
    assert dates == sorted(dates, reverse=True)
    assert date.fromisoformat(dates[0]) < date.today() + timedelta(days=1)
    entry = entries[0]
    assert 0 <= entry["productivity_pulse"] <= 100
    for field in (
        "very_productive_percentage",
        "all_distracting_percentage",
        "software_development_percentage",
        "total_hours",
        "total_duration_formatted",
    ):
        assert field in entry
    assert isinstance(entry["id"], int)


def test_faults(client):
    fault_set("rescuetime", KEY, "rate_limit")
    limited = client.get(FEED, {"key": KEY})
    assert limited.status_code == 429 and limited["Retry-After"].isdigit()
    fault_set("rescuetime", KEY, "server_error")
    assert client.get(FEED, {"key": KEY}).status_code == 503
    fault_set("rescuetime", KEY, "malformed")
    rows = client.get(DATA, {"key": KEY, "format": "json", **week()}).json()["rows"]
    assert rows[0][1] == "NaN" and len(rows[1]) < len(rows[2])
    fault_set("rescuetime", KEY, "revoke")
    assert client.get(FEED, {"key": KEY}).json() == KEY_NOT_FOUND
    fault_clear("rescuetime", KEY, "revoke")
    assert len(client.get(FEED, {"key": KEY}).json()) == 14


def test_bad_queries_are_rescuetimes_http_200_errors_never_a_500(client):
    far = "9999-12-31"
    for query in [
        {"key": "sandbox-x", "format": "json", "restrict_begin": "0001-01-01"},
        {"key": "sandbox-x", "format": "json", "restrict_begin": far, "restrict_end": far},
        {"key": "sandbox-", "format": "json"},
        {"format": "json"},
    ]:
        assert client.get("/sandbox/rescuetime/anapi/data", query).status_code == 200, query
