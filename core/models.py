"""The base model every Quorum table shares."""

from django.db import models


class TimestampedModel(models.Model):
    """Adds creation and update timestamps."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
