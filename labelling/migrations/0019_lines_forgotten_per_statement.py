from typing import Any

from django.db import migrations

# Updates of consensus rows, queue entries and items were caught a row at a time: a consensus
# run that changed 200,000 items' confidence spent 30 s in the trigger function (lock, project
# lookup, three deletes a row) against 2 s for the update itself. They are caught once a
# statement now, comparing each row's old and new columns that a line reads, and share the
# deletion of the insert and delete triggers: one probe for any line between the lowest and
# highest item id, then one an item. PostgreSQL only.
FUNCTIONS = """
CREATE OR REPLACE FUNCTION quorum_lines_drop(ids bigint[], projects bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    items bigint[];
BEGIN
    IF ids IS NULL THEN
        RETURN;
    END IF;
    IF projects IS NULL THEN  -- rows without a project column: every project's lock
        PERFORM pg_advisory_xact_lock_shared(7009, 0);
    ELSE
        PERFORM pg_advisory_xact_lock_shared(7009, p::int)
            FROM (SELECT DISTINCT p FROM unnest(projects) p WHERE p IS NOT NULL ORDER BY p) s;
    END IF;
    -- Read once the lock is held: lines a preparer committed meanwhile are seen, and deleted.
    IF NOT EXISTS (SELECT 1 FROM labelling_preparedjsonl WHERE item_id
                   BETWEEN (SELECT min(x) FROM unnest(ids) x) AND (SELECT max(x) FROM unnest(ids) x)) THEN
        RETURN;
    END IF;
    SELECT array_agg(item_id) INTO items FROM labelling_preparedjsonl WHERE item_id = ANY(ids);
    IF items IS NOT NULL THEN
        DELETE FROM labelling_preparedjsonl WHERE item_id = ANY(items);
        DELETE FROM labelling_preparedcsv WHERE item_id = ANY(items);
        DELETE FROM labelling_preparedmanifest WHERE item_id = ANY(items);
    END IF;
END $$;

-- Inserts and deletes: every row of `changed`. TG_ARGV[0]: the item column; TG_ARGV[1]: the
-- project column, or '' (then every project's lock).
CREATE OR REPLACE FUNCTION quorum_lines_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
    projects bigint[];
BEGIN
    EXECUTE format('SELECT array_agg(%I) FROM changed', TG_ARGV[0]) INTO ids;
    IF TG_ARGV[1] <> '' THEN
        EXECUTE format('SELECT array_agg(DISTINCT %I) FROM changed', TG_ARGV[1]) INTO projects;
    END IF;
    PERFORM quorum_lines_drop(ids, projects);
    RETURN NULL;
END $$;

-- Updates: the rows of `changed` whose columns TG_ARGV[2] (comma separated) differ from
-- `before`'s, where `before` meets TG_ARGV[3]; their old and new items.
CREATE OR REPLACE FUNCTION quorum_lines_updated() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
    projects bigint[];
    new_columns text;
    old_columns text;
BEGIN
    SELECT string_agg('n.' || quote_ident(c), ', '), string_agg('o.' || quote_ident(c), ', ')
        INTO new_columns, old_columns FROM unnest(string_to_array(TG_ARGV[2], ',')) c;
    EXECUTE format(
        'SELECT array_agg(v.id) FROM (SELECT n.%1$I AS x, o.%1$I AS y FROM changed n '
        'JOIN before o ON o.id = n.id WHERE (%2$s) AND ROW(%3$s) IS DISTINCT FROM ROW(%4$s)) s, '
        'LATERAL (VALUES (s.x), (s.y)) v(id)', TG_ARGV[0], TG_ARGV[3], new_columns, old_columns)
        INTO ids;
    IF ids IS NOT NULL AND TG_ARGV[1] <> '' THEN
        EXECUTE format('SELECT array_agg(DISTINCT %I) FROM changed', TG_ARGV[1]) INTO projects;
    END IF;
    PERFORM quorum_lines_drop(ids, projects);
    RETURN NULL;
END $$;
"""
# (table, item column, project column, columns a line reads, condition on the old row)
UPDATED = [
    ("labelling_consensus", "item_id", "", "item_id,label,confidence,agreement,n_labels", "true"),
    ("labelling_queueentry", "item_id", "project_id", "item_id,rule,model_version", "true"),
    (
        "labelling_item",
        "id",
        "project_id",
        "state,expert_label,gold_label,gold_set_at,source,split,created_at,external_id,payload",
        "o.state IN (''approved'', ''resolved'')",
    ),
]


def _triggers() -> str:
    sql = [FUNCTIONS]
    for table, item, project, columns, condition in UPDATED:
        sql.append(
            f"DROP TRIGGER IF EXISTS quorum_lines_update ON {table};"
            f"CREATE TRIGGER quorum_lines_update AFTER UPDATE ON {table} "
            "REFERENCING OLD TABLE AS before NEW TABLE AS changed FOR EACH STATEMENT "
            f"EXECUTE FUNCTION quorum_lines_updated('{item}', '{project}', '{columns}', "
            f"'{condition}');"
        )
    return "\n".join(sql)


def _row_triggers() -> str:
    """The row triggers of migrations 0016 and 0017, for going back."""
    changed = {
        "labelling_consensus": (
            "item_id",
            "",
            ["item_id", "label", "confidence", "agreement", "n_labels"],
        ),
        "labelling_queueentry": ("item_id", "project_id", ["item_id", "rule", "model_version"]),
    }
    sql = []
    for table, (item, project, columns) in changed.items():
        when = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in columns)
        sql.append(
            f"DROP TRIGGER IF EXISTS quorum_lines_update ON {table};"
            f"CREATE TRIGGER quorum_lines_update AFTER UPDATE ON {table} FOR EACH ROW "
            f"WHEN ({when}) EXECUTE FUNCTION quorum_line_changed('{item}', '{project}');"
        )
    columns = UPDATED[2][3].split(",")
    when = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in columns)
    sql.append(
        "DROP TRIGGER IF EXISTS quorum_lines_update ON labelling_item;"
        "CREATE TRIGGER quorum_lines_update AFTER UPDATE ON labelling_item FOR EACH ROW "
        f"WHEN (OLD.state IN ('approved', 'resolved') AND ({when})) "
        "EXECUTE FUNCTION quorum_line_changed('id', 'project_id');"
    )
    sql.append("DROP FUNCTION IF EXISTS quorum_lines_updated();")
    return "\n".join(sql)


def forward(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_triggers(), params=None)


def backward(apps: Any, schema_editor: Any) -> None:
    # quorum_lines_changed keeps its new body (the same behaviour); the row triggers return.
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_row_triggers(), params=None)


class Migration(migrations.Migration):
    dependencies = [("labelling", "0018_lines_forgotten_in_one_probe")]

    operations = [migrations.RunPython(forward, backward)]
