"""``POST /api/events/``: Sibling's own apps send a person's behavioral and volunteered events.

Errors are JSON ``{"error": "<message>"}`` (with ``fields`` for an invalid body): 400 malformed
JSON, invalid Unicode or an invalid body, 401 no or a bad token, 405 another method, 410 the
person's erasure has begun, 413 a body over 1 MB, 429 over the person's rate
(SIBLING_EVENTS_API_RATE, with ``Retry-After``). Nothing
answers 500: an unexpected failure is logged and answered 503, which apps retry.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView, exception_handler

from ingestion.authentication import ApiTokenAuthentication, HasTokenScope
from ingestion.errors import PersonErased
from ingestion.events import (
    MAX_EVENTS,
    MAX_ID_LENGTH,
    event_kinds,
    events_accept,
    unicode_invalid_where,
)

logger = logging.getLogger(__name__)
MAX_BODY_BYTES = 1_000_000
SCHEMA_PATHS = ("/api/events/",)


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField(help_text="What is wrong, in words.")
    fields = serializers.DictField(
        required=False, help_text="For an invalid body: the messages per field."
    )

    class Meta:
        ref_name = "Error"


class TooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The body is over 1 MB."
    default_code = "too_large"


class AccountErased(APIException):
    """The person's erasure has begun: nothing more of theirs is stored, and retrying will not
    change that (their tokens are refused with 401 once it has ended)."""

    status_code = status.HTTP_410_GONE
    default_detail = "This account is being erased; nothing more is stored for it."
    default_code = "erased"


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's answers as ``{"error": ...}``; anything unexpected as 503, never a 500."""
    if isinstance(exc, RecursionError):
        exc = ParseError("JSON parse error - nested too deeply")
    elif isinstance(exc, PersonErased):
        exc = AccountErased()
    response = exception_handler(exc, context)
    if response is None:
        logger.exception("%s failed", type(context.get("view")).__name__, exc_info=exc)
        return Response(
            {"error": "Temporarily unavailable, please retry."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    if isinstance(response.data, dict) and "detail" in response.data:
        response.data = {"error": str(response.data["detail"])}
    return response


class EventsApiThrottle(UserRateThrottle):
    """Per person (every token of theirs together), in the shared cache: SIBLING_EVENTS_API_RATE
    in REST framework's form ("120/min"; s, min, h, day). Over it: 429 with Retry-After."""

    scope = "events"

    def get_rate(self) -> str:
        return settings.SIBLING_EVENTS_API_RATE


class EventsCreateApi(APIView):
    authentication_classes = [ApiTokenAuthentication]
    permission_classes = [IsAuthenticated, HasTokenScope]
    required_scope = "events:write"
    throttle_classes = [EventsApiThrottle]
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]

    class InputSerializer(serializers.Serializer):
        class EventSerializer(serializers.Serializer):
            id = serializers.CharField(
                max_length=MAX_ID_LENGTH,
                help_text="The app's own id of the event; sending it again changes nothing.",
            )
            kind = serializers.ChoiceField(
                choices=event_kinds(), help_text="A behavioral or volunteered kind."
            )
            occurred_at = serializers.DateTimeField(
                help_text="RFC 3339 with an offset, e.g. 2025-03-01T08:30:00Z."
            )
            data = serializers.DictField(
                help_text="The kind's fields: mood_rating {rating 1-5, note?}, note {text, "
                "tags?}, sleep_log {start, end, quality? 1-5}, screen_time {date YYYY-MM-DD, "
                "app, seconds >= 0, device?}."
            )

            class Meta:
                ref_name = "Event"

        # Each event is checked on its own (events.event_record), so one bad event is
        # rejected without refusing the batch; the schema still documents its shape.
        @extend_schema_field(EventSerializer)
        class EventField(serializers.JSONField):
            pass

        events = serializers.ListField(
            child=EventField(), min_length=1, max_length=MAX_EVENTS, allow_empty=False
        )

        class Meta:
            ref_name = "EventsCreateInput"

    class OutputSerializer(serializers.Serializer):
        class RejectedSerializer(serializers.Serializer):
            index = serializers.IntegerField(help_text="Position of the event in the batch.")
            id = serializers.CharField(allow_null=True, help_text="The event's id, if it had one.")
            reason = serializers.CharField()

            class Meta:
                ref_name = "RejectedEvent"

        accepted = serializers.IntegerField(min_value=0)
        rejected = RejectedSerializer(many=True)

        class Meta:
            ref_name = "EventsCreateOutput"

    def get_exception_handler(self) -> Any:
        return api_exception_handler

    @extend_schema(
        operation_id="events_create",
        summary="Send events",
        description=(
            f"Between 1 and {MAX_EVENTS} events of the signed-in person (body up to 1 MB). Each "
            "event is checked against its kind at once; valid ones are accepted and stored, "
            "invalid ones are listed in `rejected` with the reason. Resending a batch answers "
            "the same and stores nothing twice."
        ),
        request=InputSerializer,
        responses={
            202: OutputSerializer,
            400: OpenApiResponse(ErrorSerializer, description="Malformed JSON or invalid body."),
            401: OpenApiResponse(ErrorSerializer, description="No token, or a bad one."),
            403: OpenApiResponse(
                ErrorSerializer, description="The token lacks the events:write scope."
            ),
            410: OpenApiResponse(
                ErrorSerializer, description="The person's account is being erased."
            ),
            413: OpenApiResponse(ErrorSerializer, description="The body is over 1 MB."),
            429: OpenApiResponse(
                ErrorSerializer, description="Too many requests; retry after `Retry-After` s."
            ),
        },
        examples=[
            OpenApiExample(
                "A mood rating",
                request_only=True,
                value={
                    "events": [
                        {
                            "id": "mood-2025-03-01-1",
                            "kind": "mood_rating",
                            "occurred_at": "2025-03-01T08:30:00Z",
                            "data": {"rating": 4, "note": "slept well"},
                        }
                    ]
                },
            )
        ],
        tags=["events"],
    )
    def post(self, request: Request) -> Response:
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise TooLarge()
        if len(request.body) > MAX_BODY_BYTES:
            raise TooLarge()
        # JSON may escape a lone surrogate ("\ud800"), which is no text: MongoDB (BSON, UTF-8)
        # cannot store it, so it is refused here, where it is named, not retried forever.
        where = unicode_invalid_where(request.data, "body")
        if where is not None:
            return Response(
                {"error": f"{where}: invalid Unicode (a lone surrogate); send UTF-8 text"},
                status=status.HTTP_400_BAD_REQUEST,
            )
        body = self.InputSerializer(data=request.data)
        if not body.is_valid():
            return Response(
                {"error": _errors_text(body.errors), "fields": body.errors},
                status=status.HTTP_400_BAD_REQUEST,
            )
        result = events_accept(user=request.user, events=body.validated_data["events"])
        output = self.OutputSerializer(
            {
                "accepted": result.accepted,
                "rejected": [
                    {"index": r.index, "id": r.id, "reason": r.reason} for r in result.rejected
                ],
            }
        )
        return Response(output.data, status=status.HTTP_202_ACCEPTED)


def _errors_text(errors: Any, prefix: str = "") -> str:
    """DRF's nested error dict as one line, e.g. "events: Ensure this field has ..."."""
    if isinstance(errors, dict):
        parts = [_errors_text(value, f"{prefix}{key}: ") for key, value in errors.items()]
        return "; ".join(part for part in parts if part)
    if isinstance(errors, list):
        return "; ".join(_errors_text(value, prefix) for value in errors)
    return f"{prefix}{errors}".replace("non_field_errors: ", "")


def schema_endpoints_filter(endpoints: list[Any], **kwargs: Any) -> list[Any]:
    """drf-spectacular preprocessing hook: the published schema is the events API and the
    records API (``/api/v1/``), not admin or internal views."""
    return [
        endpoint
        for endpoint in endpoints
        if endpoint[0] in SCHEMA_PATHS or endpoint[0].startswith("/api/v1/")
    ]
