from sources.providers.gmail.provider import Gmail
from sources.providers.google import ProviderGoogleOAuth2


class GmailOAuth2(ProviderGoogleOAuth2):
    name = Gmail.id
    provider = Gmail
