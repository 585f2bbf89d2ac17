from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from sibling.services import health_report


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Database ping, key vault reachable, worker heartbeat age: 200 when all hold, else 503."""
    report = health_report()
    return JsonResponse(report.as_dict(), status=200 if report.healthy else 503)
