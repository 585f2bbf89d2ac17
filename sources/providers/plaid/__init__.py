from sources.providers.plaid.provider import Plaid

__all__ = ["Plaid"]
