from sources.providers.gmail.provider import Gmail

__all__ = ["Gmail"]
