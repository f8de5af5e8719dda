"""The audit explorer's indexes: one per filter, each ending in -seq (see AuditEvent.Meta).

On PostgreSQL they are built CONCURRENTLY, so that a log of millions of events keeps taking writes while they are
built (hence atomic = False); elsewhere (SQLite) plainly. Only then are the single-column indexes on action and
environment dropped: the new ones lead with the same columns and serve equality on them too (nothing filters audit
events with LIKE, which their varchar_pattern_ops twins were for).
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class AddIndexConcurrentlyOnPostgres(AddIndexConcurrently):
    """AddIndexConcurrently on PostgreSQL, a plain AddIndex on any other database."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            migrations.AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            migrations.AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)


# The indexes 0001 made for `db_index=True` on action and environment (PostgreSQL adds a varchar_pattern_ops twin).
OLD_INDEXES = {
    "audit_auditevent_action_2131bb77": "action",
    "audit_auditevent_environment_e46d81d0": "environment",
}


def drop_single_column_indexes(apps, schema_editor):
    postgres = schema_editor.connection.vendor == "postgresql"
    for name in OLD_INDEXES:
        for index in (name, f"{name}_like") if postgres else (name,):
            schema_editor.execute(f'DROP INDEX {"CONCURRENTLY " if postgres else ""}IF EXISTS "{index}"')


def restore_single_column_indexes(apps, schema_editor):
    postgres = schema_editor.connection.vendor == "postgresql"
    for name, column in OLD_INDEXES.items():
        schema_editor.execute(f'CREATE INDEX IF NOT EXISTS "{name}" ON "audit_auditevent" ("{column}")')
        if postgres:
            schema_editor.execute(
                f'CREATE INDEX IF NOT EXISTS "{name}_like" ON "audit_auditevent" ("{column}" varchar_pattern_ops)'
            )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('audit', '0003_auditverification'),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name='auditevent',
            index=models.Index(fields=['environment', '-seq'], name='audit_env_seq_idx'),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name='auditevent',
            index=models.Index(fields=['action', '-seq'], name='audit_action_seq_idx'),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name='auditevent',
            index=models.Index(fields=['actor_name', '-seq'], name='audit_actor_seq_idx'),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name='auditevent',
            index=models.Index(fields=['target_type', '-seq'], name='audit_ttype_seq_idx'),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name='auditevent',
            index=models.Index(fields=['outcome', '-seq'], name='audit_outcome_seq_idx'),
        ),
        # By name rather than through AlterField: SQLite would rebuild the whole table for it, and PostgreSQL can drop
        # them CONCURRENTLY this way.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='auditevent',
                    name='action',
                    field=models.CharField(max_length=80),
                ),
                migrations.AlterField(
                    model_name='auditevent',
                    name='environment',
                    field=models.CharField(blank=True, max_length=64),
                ),
            ],
            database_operations=[
                migrations.RunPython(drop_single_column_indexes, restore_single_column_indexes),
            ],
        ),
    ]
