import factory
from django.contrib.auth import get_user_model


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"person{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("correct horse battery staple")


class UserDataSourceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "sources.UserDataSource"

    user = factory.SubFactory(UserFactory)
    provider = "rescuetime"
    external_account_id = factory.Sequence(lambda n: f"account-{n}")
    account_label = "RescueTime account"
    credentials = factory.LazyAttribute(
        lambda c: {"api_key": f"sandbox-key-{c.external_account_id}"}
    )
