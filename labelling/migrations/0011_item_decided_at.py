"""Item.decided_at: when an item's decision last changed, read by "since the last release".

Existing approved and resolved items get the latest of their last valid label, their expert's
resolution and their gold answer (else their creation time): the moment their decision was
last made, as far as the stored data tell.
"""

from django.db import migrations, models

LATEST = {
    "postgresql": "GREATEST({label}, {resolution}, i.gold_set_at)",
    # SQLite's MAX(a, b, c) is NULL as soon as one is; its datetimes are ISO text, so '' sorts
    # before every one of them.
    "sqlite": "NULLIF(MAX(COALESCE({label}, ''), COALESCE({resolution}, ''), "
    "COALESCE(i.gold_set_at, '')), '')",
}


def backfill_decided_at(apps, schema_editor):
    """Give every decided item the time of its last label, resolution or gold answer."""
    vendor = schema_editor.connection.vendor
    latest = LATEST.get(vendor, LATEST["postgresql"]).format(
        label="(SELECT MAX(l.created_at) FROM labelling_label l "
        "WHERE l.item_id = i.id AND l.state = 'valid')",
        resolution="(SELECT MAX(e.resolved_at) FROM labelling_escalation e "
        "WHERE e.item_id = i.id AND e.resolved_at IS NOT NULL)",
    )
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE labelling_item AS i SET decided_at = COALESCE({latest}, i.created_at) "
            "WHERE i.state IN ('approved', 'resolved')"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("labelling", "0010_problems"),
    ]

    operations = [
        migrations.AddField(
            model_name="item",
            name="decided_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(backfill_decided_at, migrations.RunPython.noop),
    ]
