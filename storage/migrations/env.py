"""Alembic's entry point: runs the revisions in versions/ on the connection storage.migrate
gives, or, from the `alembic` command line, on $REELWATCH_DATABASE_URL."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from storage.db import database_url, make_engine
from storage.migrate import check_foreign_keys, context_options, migration_connection

config = context.config


def run_on(connection: Connection) -> None:
    context.configure(connection=connection, **context_options(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


if config.config_file_name is not None:  # the alembic command line, with alembic.ini
    fileConfig(config.config_file_name, disable_existing_loggers=False)

if context.is_offline_mode():
    url = config.get_main_option("sqlalchemy.url") or database_url()
    dialect = url.split(":", 1)[0].split("+", 1)[0]
    context.configure(url=url, literal_binds=True, **context_options(dialect))
    with context.begin_transaction():
        context.run_migrations()
elif (given := config.attributes.get("connection")) is not None:
    run_on(given)  # storage.migrate.upgrade_schema: inside its transaction
else:
    engine = make_engine(config.get_main_option("sqlalchemy.url") or database_url())
    with migration_connection(engine) as connection, connection.begin():
        run_on(connection)
        check_foreign_keys(connection)
    engine.dispose()
