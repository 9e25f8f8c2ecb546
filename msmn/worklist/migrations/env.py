"""Alembic's entry point for the worklist's migrations: `msmn.worklist.database` runs them on its own
connection (`config.attributes["connection"]`)."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
