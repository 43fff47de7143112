"""The labelling app: projects, items, predictions, labellers and everything done with them."""

from django.apps import AppConfig


class LabellingConfig(AppConfig):
    name = "labelling"
    verbose_name = "Labelling"
    default_auto_field = "django.db.models.BigAutoField"
