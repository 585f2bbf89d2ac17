from sources.providers.fitbit.provider import Fitbit
from sources.providers.google import ProviderGoogleOAuth2


class FitbitOAuth2(ProviderGoogleOAuth2):
    name = Fitbit.id
    provider = Fitbit
