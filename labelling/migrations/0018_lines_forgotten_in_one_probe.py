from typing import Any

from django.db import migrations

# A statement's changes delete lines only where there are some: first one probe for any line
# between the lowest and highest item id changed (none for predictions of new items, whose ids
# come after every item with lines), then one probe an item into the JSON Lines table's key (the
# three tables are written and emptied together). Before, every row probed all three tables and
# found its project through its item: about 7 µs a row, most of a bulk insert of predictions for
# new items. Rows without a project column (predictions, consensus) take the lock of every
# project (namespace 7009, key 0), which the preparer takes with its project's. PostgreSQL only.
CHANGED = """
CREATE OR REPLACE FUNCTION quorum_lines_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    low bigint;
    high bigint;
    items bigint[];
BEGIN
    EXECUTE format('SELECT min(%I), max(%I) FROM changed', TG_ARGV[0], TG_ARGV[0])
        INTO low, high;
    IF low IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_ARGV[1] = '' THEN
        PERFORM pg_advisory_xact_lock_shared(7009, 0);
    ELSE
        EXECUTE format('SELECT pg_advisory_xact_lock_shared(7009, p::int) FROM '
            '(SELECT DISTINCT %I AS p FROM changed ORDER BY 1) s', TG_ARGV[1]);
    END IF;
    -- Read once the lock is held: lines a preparer committed meanwhile are seen, and deleted.
    IF NOT EXISTS (SELECT 1 FROM labelling_preparedjsonl WHERE item_id BETWEEN low AND high) THEN
        RETURN NULL;
    END IF;
    EXECUTE format('SELECT array_agg(r.item_id) FROM labelling_preparedjsonl r '
        'WHERE r.item_id = ANY(ARRAY(SELECT %I FROM changed))', TG_ARGV[0]) INTO items;
    IF items IS NOT NULL THEN
        DELETE FROM labelling_preparedjsonl WHERE item_id = ANY(items);
        DELETE FROM labelling_preparedcsv WHERE item_id = ANY(items);
        DELETE FROM labelling_preparedmanifest WHERE item_id = ANY(items);
    END IF;
    RETURN NULL;
END $$;
"""
BEFORE = """
CREATE OR REPLACE FUNCTION quorum_lines_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    projects bigint[];
    items bigint[];
BEGIN
    IF TG_ARGV[1] = '' THEN
        EXECUTE format('SELECT array_agg(DISTINCT %I) FROM changed', TG_ARGV[0]) INTO items;
        SELECT array_agg(DISTINCT project_id) INTO projects FROM labelling_item
            WHERE id = ANY(items);
    ELSE
        EXECUTE format('SELECT array_agg(DISTINCT %I), array_agg(DISTINCT %I) FROM changed',
            TG_ARGV[0], TG_ARGV[1]) INTO items, projects;
    END IF;
    IF items IS NOT NULL THEN
        PERFORM quorum_lines_forget(projects, items);
    END IF;
    RETURN NULL;
END $$;
"""


def forward(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CHANGED, params=None)


def backward(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BEFORE, params=None)


class Migration(migrations.Migration):
    dependencies = [("labelling", "0017_prepared_lines_by_format")]

    operations = [migrations.RunPython(forward, backward)]
