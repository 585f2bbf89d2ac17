from sources.providers.rescuetime.provider import RescueTime

__all__ = ["RescueTime"]
