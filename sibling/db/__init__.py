"""Sibling's database backend: django-mongodb-backend, with filters every server can index.

The ORM states a filter on several fields as ``{"$and": [{"a": 1}, {"b": 2}]}``. MongoDB plans
that like ``{"a": 1, "b": 2}``, but the embedded development server only uses an index for the
flat form and scans the collection for the other, so every multi-field lookup (a connection by
its provider account, an event by its id and status) grew with the collection. This backend
merges such conjunctions into one flat document before they are sent; everything else is
django-mongodb-backend unchanged. Set ``ENGINE`` to ``"sibling.db"``.
"""
