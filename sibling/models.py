from django.db import models


class WorkerHeartbeat(models.Model):
    """The last time a worker of a cluster ran the heartbeat task (read by /healthz)."""

    cluster = models.CharField(max_length=100, unique=True)
    host = models.CharField(max_length=255)
    pid = models.IntegerField()
    beat_at = models.DateTimeField()

    class Meta:
        verbose_name = "worker heartbeat"

    def __str__(self) -> str:
        return f"{self.cluster} on {self.host} at {self.beat_at:%Y-%m-%d %H:%M:%S}"
