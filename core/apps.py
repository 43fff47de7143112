"""The core app: shared base model, exceptions and permissions."""

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Quorum core"
