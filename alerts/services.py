"""Alerts by email: an incident opens when a connection needs its person, one email tells them,
and the incident closes when the connection is active again.

Opening is a single insert under a unique key (``Incident.key``), so the same incident is opened
once whatever number of signals, workers or processes report it; the email is claimed by one
sender at a time (an atomic update) before it is sent, so a task delivered twice, or two workers
running it at once, send it once. What is sent names the provider and what to do, with links,
never a token, an account label or a record value.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError
from django.db.models import F
from django.template.loader import render_to_string
from django.urls import Resolver404, resolve, reverse
from django.utils import timezone

from alerts.models import Incident, incident_open_key
from ingestion.fence import person_fenced
from sibling import mongo
from sibling.models import Person
from sibling.people import person_of
from sources.models import UserDataSource

logger = logging.getLogger(__name__)
Kind = Incident.Kind
EmailState = Incident.EmailState
Status = UserDataSource.Status

# How long a sender owns a claimed email (far more than an SMTP exchange with EMAIL_TIMEOUT);
# a sender that died with it is replaced after that.
EMAIL_CLAIM_S = 300
# A failed send is tried again after 5 minutes, doubling, this many times in all.
EMAIL_MAX_ATTEMPTS = 5
EMAIL_RETRY_BASE_S = 300
# Waiting to be sent, or claimed by a sender that may have died (due when its claim runs out).
EMAIL_DUE_STATES = (EmailState.PENDING, EmailState.SENDING)
STOP_SALT = "alerts.emails-stop"
SETTINGS_PATH = "/settings/"


@dataclass(frozen=True)
class Message:
    subject: str
    what: str  # what happened, a sentence
    todo: str  # what the person should do, a sentence


# {provider} is the provider's name, as its card on Connections shows it.
MESSAGES: dict[str, Message] = {
    Kind.REAUTH_REQUIRED: Message(
        subject="Sign in to {provider} again to keep it syncing",
        what="{provider} no longer accepts Sibling's access to your account, so Sibling has "
        "stopped syncing it.",
        todo="Open Connections and choose Reconnect on {provider} to sign in again.",
    ),
    Kind.STOPPED: Message(
        subject="{provider} has stopped syncing",
        what="Sibling could not sync {provider} several times in a row and has stopped trying.",
        todo="Open Connections to see what went wrong, then reconnect {provider}.",
    ),
    Kind.EXPIRING: Message(
        subject="{provider} will stop sharing your data soon",
        what="{provider} told Sibling that it will soon stop sharing your data.",
        todo="Open Connections and choose Reconnect on {provider} to keep it current.",
    ),
}
# Which incidents a successful sync ends: an expiry notice stands until the person reconnects.
CLOSED_BY_SUCCESS = (Kind.REAUTH_REQUIRED, Kind.STOPPED)


# --- Incidents ------------------------------------------------------------------------------


def incident_open(*, connection: UserDataSource, kind: str) -> Incident | None:
    """Open the connection's incident of ``kind``, unless one is open already. Returns the new
    incident (its email still to send), or None when this reports an incident already open.

    An open incident that a successful sync has since ended (the connection's last success is
    after it opened) is closed here first, so a new failure after a recovery is a new incident.
    """
    key = incident_open_key(connection.pk, kind)
    for _attempt in range(2):
        try:
            return Incident.objects.create(
                user_id=connection.user_id,
                connection_id=connection.pk,
                provider=connection.provider,
                kind=kind,
                key=key,
                opened_at=timezone.now(),
                # Its task sends it at once; the periodic sweep only picks up one that was lost.
                email_next_attempt_at=timezone.now() + timedelta(seconds=EMAIL_CLAIM_S),
            )
        except IntegrityError:
            existing = Incident.objects.filter(key=key).first()
            if existing is None or not _ended_by_success(existing, _last_success(connection)):
                return None  # the same incident, reported again
            incident_close(incident=existing, closed_by=Incident.Closed.SYNCED)
    return None  # another process opened it meanwhile


def incidents_close(*, connection_id: object, closed_by: str) -> int:
    """Close every open incident of the connection (it was reconnected, or disconnected)."""
    closed = 0
    for kind in Kind.values:
        incident = Incident.objects.filter(key=incident_open_key(connection_id, kind)).first()
        if incident is not None:
            closed += incident_close(incident=incident, closed_by=closed_by)
    return closed


def incident_close(*, incident: Incident, closed_by: str) -> int:
    """Close the incident if it is still open (1), else 0. Its key becomes its own, freeing the
    open key for the connection's next incident of that kind."""
    now = timezone.now()
    changes: dict[str, Any] = {
        "key": f"closed:{incident.pk}:{uuid.uuid4().hex}",
        "closed_at": now,
        "closed_by": closed_by,
    }
    closed = Incident.objects.filter(pk=incident.pk, key=incident.key, closed_at=None).update(
        **changes
    )
    if closed:
        # An email not yet sent is not sent: what it would ask for is done.
        Incident.objects.filter(pk=incident.pk, email_state=EmailState.PENDING).update(
            email_state=EmailState.SKIPPED, email_note="resolved before it was sent"
        )
        logger.info("alert %s closed (%s)", incident.pk, closed_by)
    return closed


def _last_success(connection: UserDataSource) -> datetime | None:
    return (
        UserDataSource.objects.filter(pk=connection.pk)
        .values_list("last_success_at", flat=True)
        .first()
    )


def _ended_by_success(incident: Incident, last_success_at: datetime | None) -> bool:
    return (
        incident.kind in CLOSED_BY_SUCCESS
        and last_success_at is not None
        and last_success_at > incident.opened_at
    )


def _resolved(incident: Incident, connection: UserDataSource | None) -> str:
    """How the incident ended without anyone telling it (a Closed value), or ""."""
    if connection is None or connection.status == Status.DISCONNECTED:
        return Incident.Closed.DISCONNECTED
    if _ended_by_success(incident, connection.last_success_at):
        return Incident.Closed.SYNCED
    if incident.kind in CLOSED_BY_SUCCESS and connection.status == Status.ACTIVE:
        # Working again without a reconnect (the provider says the login was repaired).
        return Incident.Closed.SYNCED
    return ""


# --- The email ------------------------------------------------------------------------------


def incident_email_send(*, incident_id: object) -> str:
    """Send the incident's email unless it was sent, and return what became of it (an
    EmailState, or "not claimed").

    The email is claimed first (pending, or a claim whose sender died: EMAIL_CLAIM_S, far
    longer than an SMTP exchange may take with EMAIL_TIMEOUT); whoever does not win the claim
    sends nothing. So a task run twice, or by two workers at once, sends one email; only a
    process killed between the mail server's acceptance and the next write could leave it to
    be sent again. A failed send is given back to be tried again later
    (``incidents_email_due``), up to EMAIL_MAX_ATTEMPTS. Nothing is sent for an incident that
    has ended, to a person who turned alert emails off, has no address or is being erased.
    """
    incident = _email_claim(incident_id)
    if incident is None:
        return "not claimed"
    connection = UserDataSource.objects.filter(pk=incident.connection_id).first()
    if incident.closed_at is not None:
        return _email_skip(incident, "resolved before it was sent")
    if closed_by := _resolved(incident, connection):
        incident_close(incident=incident, closed_by=closed_by)
        return _email_skip(incident, "resolved before it was sent")
    user = get_user_model().objects.filter(pk=incident.user_id).first()
    if user is None or person_fenced(incident.user_id):
        return _email_skip(incident, "the person is being erased")
    person = person_of(user)
    if not person.alert_emails:
        return _email_skip(incident, "alert emails are turned off")
    address = (user.email or "").strip()
    if not address:
        return _email_skip(incident, "no email address")
    message = incident_email_build(incident=incident, person=person, to=address)
    try:
        message.send(fail_silently=False)
    except Exception as err:  # SMTP, network, a backend's own errors: tried again later
        return _email_failed(incident, err)
    Incident.objects.filter(pk=incident.pk).update(
        email_state=EmailState.SENT,
        emailed_at=timezone.now(),
        email_claimed_until=None,
        email_next_attempt_at=None,
        email_note="",
    )
    logger.info("alert %s emailed (%s, %s)", incident.pk, incident.kind, incident.provider)
    return EmailState.SENT


def _email_claim(incident_id: object) -> Incident | None:
    now = timezone.now()
    until = now + timedelta(seconds=EMAIL_CLAIM_S)
    claim = {
        "email_state": EmailState.SENDING,
        "email_claimed_until": until,
        # Due again when the claim runs out: the sweep gives a sender that died a successor.
        "email_next_attempt_at": until,
        "email_attempts": F("email_attempts") + 1,
    }
    claimed = Incident.objects.filter(pk=incident_id, email_state=EmailState.PENDING).update(
        **claim
    )
    if not claimed:  # a sender that died with its claim
        claimed = Incident.objects.filter(
            pk=incident_id, email_state=EmailState.SENDING, email_claimed_until__lt=now
        ).update(**claim)
    if not claimed:
        return None
    return Incident.objects.filter(pk=incident_id).first()


def _email_skip(incident: Incident, note: str) -> str:
    Incident.objects.filter(pk=incident.pk, email_state=EmailState.SENDING).update(
        email_state=EmailState.SKIPPED,
        email_note=note,
        email_claimed_until=None,
        email_next_attempt_at=None,
    )
    logger.info("alert %s not emailed: %s", incident.pk, note)
    return EmailState.SKIPPED


def _email_failed(incident: Incident, err: Exception) -> str:
    attempts = incident.email_attempts
    give_up = attempts >= EMAIL_MAX_ATTEMPTS
    delay = timedelta(seconds=EMAIL_RETRY_BASE_S * 2 ** (attempts - 1))
    Incident.objects.filter(pk=incident.pk, email_state=EmailState.SENDING).update(
        email_state=EmailState.FAILED if give_up else EmailState.PENDING,
        email_note=type(err).__name__[:100],
        email_claimed_until=None,
        email_next_attempt_at=None if give_up else timezone.now() + delay,
    )
    # The error's class only: an SMTP answer may quote the address.
    logger.warning(
        "alert %s: sending its email failed (%s), attempt %d%s",
        incident.pk,
        type(err).__name__,
        attempts,
        ", giving up" if give_up else "",
    )
    return EmailState.FAILED if give_up else EmailState.PENDING


def incidents_email_due(*, limit: int = 200) -> list[object]:
    """The incidents whose email is due again (a failed send's retry, a task that was lost, or
    a claim whose sender died before it sent or gave it back), for the periodic task to send;
    each is put off by EMAIL_CLAIM_S, so a sweep that runs again before their tasks did does
    not queue them again."""
    now = timezone.now()
    incidents = mongo.plain_database()[Incident._meta.db_table]
    due: list[object] = []
    for state in EMAIL_DUE_STATES:
        if len(due) >= limit:
            break
        rows = incidents.find(email_due_filter(state, now), {"_id": 1}).limit(limit - len(due))
        due += [row["_id"] for row in rows]
    # By id alone (the embedded server scans for $in beside another condition). At worst, a
    # send that failed meanwhile is tried again after EMAIL_CLAIM_S instead of its backoff.
    Incident.objects.filter(pk__in=due).update(
        email_next_attempt_at=now + timedelta(seconds=EMAIL_CLAIM_S)
    )
    return due


def email_due_filter(state: str, now: datetime) -> dict[str, Any]:
    """The sweep's filter for one state, as a flat document of an equality and a range on the
    ``alert_email_due`` index: the embedded server scans the collection for the ORM's form (the
    range's null checks under ``$and``) and for ``$in``."""
    return {"email_state": str(state), "email_next_attempt_at": {"$lte": now}}


def incident_email_build(*, incident: Incident, person: Person, to: str) -> EmailMultiAlternatives:
    """The email for one incident: the provider's name, what happened, what to do, a link to
    Connections and one to stop these emails (also as List-Unsubscribe, RFC 8058)."""
    provider = incident.get_provider_display()
    text = MESSAGES[incident.kind]
    stop_url = public_url(reverse("alerts:emails_stop", args=[emails_stop_token(person)]))
    context = {
        "provider": provider,
        "subject": text.subject.format(provider=provider),
        "what": text.what.format(provider=provider),
        "todo": text.todo.format(provider=provider),
        "fix_url": public_url(reverse("sources:connections")) + f"#card-{incident.provider}",
        "stop_url": stop_url,
        "settings_url": settings_url(),
    }
    message = EmailMultiAlternatives(
        subject=context["subject"],
        body=render_to_string("alerts/email/incident.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[to],
        headers={
            "List-Unsubscribe": f"<{stop_url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "Auto-Submitted": "auto-generated",
        },
    )
    message.attach_alternative(render_to_string("alerts/email/incident.html", context), "text/html")
    return message


def public_url(path: str) -> str:
    """An absolute link for an email: SIBLING_PUBLIC_URL and the path."""
    return f"{settings.SIBLING_PUBLIC_URL.rstrip('/')}{path}"


def settings_url() -> str:
    """The person's settings page (where alert emails are switched on and off), when the site
    has one at /settings/; "" otherwise."""
    try:
        resolve(SETTINGS_PATH)
    except Resolver404:
        return ""
    return public_url(SETTINGS_PATH)


# --- Stopping the emails --------------------------------------------------------------------


class StopLinkInvalid(Exception):
    """The link was not made by Sibling (forged, altered or cut short)."""


class StopLinkUnknown(Exception):
    """The link was Sibling's, but its person is no longer here."""


def emails_stop_token(person: Person) -> str:
    """A signed value naming the person's settings row, for the one-click link. Its id is used
    nowhere outside Sibling (unlike the pseudonymous id other modules know them by, which an
    email must not tie to an address). It does not expire: an email is read whenever it is."""
    return signing.dumps({"p": str(person.pk)}, salt=STOP_SALT)


def emails_stop_person(token: str) -> Person:
    """The person a stop link names; StopLinkInvalid or StopLinkUnknown otherwise."""
    try:
        value = signing.loads(token, salt=STOP_SALT)
    except (signing.BadSignature, ValueError, TypeError, UnicodeError) as err:
        raise StopLinkInvalid from err
    person_id = value.get("p") if isinstance(value, dict) else None
    if not isinstance(person_id, str) or not ObjectId.is_valid(person_id):
        raise StopLinkInvalid
    person = Person.objects.filter(pk=ObjectId(person_id)).first()
    if person is None:
        raise StopLinkUnknown
    return person


def emails_stop(*, person: Person) -> bool:
    """Turn the person's alert emails off; True when they were on."""
    changed = Person.objects.filter(pk=person.pk, alert_emails=True).update(alert_emails=False)
    person.alert_emails = False
    if changed:
        logger.info("alert emails turned off from a stop link")
    return bool(changed)
