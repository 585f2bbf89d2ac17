from sources.providers.fitbit.provider import Fitbit

__all__ = ["Fitbit"]
