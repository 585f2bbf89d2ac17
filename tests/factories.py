import factory
from django.contrib.auth import get_user_model


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"person{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("correct horse battery staple")


# What a view-only staff member holds: the lists and details, the dashboard, the privacy page.
STAFF_VIEW_PERMISSIONS = (
    "sources.view_userdatasource",
    "ingestion.view_syncrun",
    "ingestion.view_webhookevent",
    "ingestion.view_quarantineditem",
    "ingestion.view_person_privacy",
)


class StaffFactory(UserFactory):
    """A staff member (not a superuser) holding exactly ``permissions``, each "app.codename":
    ``StaffFactory(permissions=STAFF_VIEW_PERMISSIONS)``."""

    username = factory.Sequence(lambda n: f"staff{n}")
    is_staff = True

    @factory.post_generation
    def permissions(
        self, create: bool, extracted: tuple[str, ...] | None, **kwargs: object
    ) -> None:
        from django.contrib.auth.models import Permission

        for name in extracted or ():
            app_label, codename = name.split(".")
            self.user_permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )


def _api_key_provider() -> type:
    from tests.sources.providers.kit import provider_for

    return provider_for(auth_mode="api_key")


class UserDataSourceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "sources.UserDataSource"

    user = factory.SubFactory(UserFactory)
    # An API-key provider from the registry: its credentials are a key, nothing to refresh.
    provider = factory.LazyFunction(lambda: _api_key_provider().id)
    external_account_id = factory.Sequence(lambda n: f"account-{n}")
    account_label = factory.LazyAttribute(lambda c: f"{c.provider} account")
    credentials = factory.LazyAttribute(
        lambda c: {"api_key": f"sandbox-key-{c.external_account_id}"}
    )

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        # Connecting creates the person's data key (connection_upsert); a factory connects too.
        from ingestion.fence import data_key_ensure

        data_key_ensure(kwargs["user"].pk)
        return super()._create(model_class, *args, **kwargs)
