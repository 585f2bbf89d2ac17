"""Sibling's database backend: django-mongodb-backend, with queries stated in forms every server
indexes and answers alike.

- **Flat filters.** The ORM states a filter on several fields as
  ``{"$and": [{"a": 1}, {"b": 2}]}``. MongoDB plans that like ``{"a": 1, "b": 2}``, but the
  embedded development server only uses an index for the flat form and scans the collection for
  the other, so every multi-field lookup (a connection by its provider account, an event by its
  id and status) grew with the collection. Such conjunctions are merged into one flat document.
- **Dotted field specifications.** The backend projects a joined collection's fields as a nested
  document (``$project: {"django_content_type": {"app_label": 1}}``, and the same shape in
  ``$addFields`` when ordering by a related field). MongoDB reads that exactly like the dotted
  ``"django_content_type.app_label": 1``; the embedded server answers the nested form with the
  literal ``1`` (or replaces the whole joined document), which silently broke every
  non-superuser's permissions, ``values()`` across relations and ordering by a related field.
  Nested specifications are written as dotted paths.
- **Fixed-offset time zones.** Django names ``Etc/GMT+10`` "-10" and a ``datetime.timezone``
  "UTC-10:00"; date operators get them as "-10:00", which every server accepts.

Everything else is django-mongodb-backend unchanged. Set ``ENGINE`` to ``"sibling.db"``.
"""
