"""The PostgreSQL store's schema, changed only through numbered migrations.

Everything lives in the ``rap`` schema of a database that many users, API
workers and machines share. ``rap.schema_version`` holds the number of
migrations applied; a database migrated by a newer rap is refused rather than
misread. Migrations run under a transaction-level advisory lock, so processes
opening the store at once migrate it exactly once.

Each table carries ``user_id`` and every query the store makes filters by it.
Vectors are stored ``MAIN``: kept in the row, not moved out to TOAST, which a
768-float vector (3 KB) otherwise would be, costing an extra lookup per row in
an exact scan.
Vectors keep their dimension in a column: one HNSW index per dimension in use
(a partial index on ``embedding::vector(dim)``), created when the first vector
of that dimension arrives, so users keyed by different encoders share the table.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from rap.errors import StoreError

MIGRATION_LOCK = 0x7261705F6D6967  # "rap_mig": pg_advisory_xact_lock key for migrations and DDL

MIGRATIONS: tuple[str, ...] = (
    # 1: users, their concepts, reference images (bytes inside) and vectors.
    """
    CREATE TABLE rap.users (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name text NOT NULL UNIQUE,
        encoder_image text,
        encoder_face text,
        last_image bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE rap.concepts (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        user_id bigint NOT NULL REFERENCES rap.users (id) ON DELETE CASCADE,
        name text NOT NULL,
        name_key text NOT NULL,
        info text NOT NULL DEFAULT '',
        category text NOT NULL,
        attributes jsonb NOT NULL DEFAULT '{}',
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        UNIQUE (user_id, name_key)
    );
    CREATE INDEX concepts_category ON rap.concepts (user_id, category);
    CREATE TABLE rap.images (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        user_id bigint NOT NULL REFERENCES rap.users (id) ON DELETE CASCADE,
        number bigint NOT NULL,
        concept_id bigint NOT NULL REFERENCES rap.concepts (id) ON DELETE CASCADE,
        file text NOT NULL,
        sha256 text NOT NULL,
        width integer NOT NULL,
        height integer NOT NULL,
        data bytea NOT NULL,
        UNIQUE (user_id, number)
    );
    ALTER TABLE rap.images ALTER COLUMN data SET STORAGE EXTERNAL;
    CREATE INDEX images_concept ON rap.images (concept_id);
    CREATE INDEX images_file ON rap.images (user_id, file);
    CREATE TABLE rap.vectors (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        user_id bigint NOT NULL REFERENCES rap.users (id) ON DELETE CASCADE,
        image_id bigint NOT NULL REFERENCES rap.images (id) ON DELETE CASCADE,
        space text NOT NULL,
        dim integer NOT NULL,
        box integer[],
        embedding vector NOT NULL,
        CHECK (vector_dims(embedding) = dim)
    );
    ALTER TABLE rap.vectors ALTER COLUMN embedding SET STORAGE MAIN;
    CREATE INDEX vectors_user_space ON rap.vectors (user_id, space, dim);
    CREATE INDEX vectors_image ON rap.vectors (image_id);
    """,
    # 2: the users of 'rap serve' and their key hashes (rap.users above are the stores' owners;
    # a server binds each API user's store to the store user named by the API user's id).
    """
    CREATE TABLE rap.api_users (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name text NOT NULL UNIQUE,
        key_sha256 text NOT NULL UNIQUE,
        created_at timestamptz NOT NULL DEFAULT now(),
        revoked boolean NOT NULL DEFAULT false
    );
    """,
    # 3: what a user's store records beside its vectors (ConceptStore.record): an operating point, a model digest.
    """
    CREATE TABLE rap.user_records (
        user_id bigint NOT NULL REFERENCES rap.users (id) ON DELETE CASCADE,
        key text NOT NULL,
        value text NOT NULL,
        PRIMARY KEY (user_id, key)
    );
    """,
)

HNSW_MAX_DIM = 2000
"""pgvector's HNSW indexes ``vector`` columns of up to 2,000 dimensions; wider spaces are searched exactly."""


def _prelude(connection: psycopg.Connection) -> None:
    try:
        connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.errors.InsufficientPrivilege:
        raise StoreError(
            "the database lacks the pgvector extension and this role may not create it; "
            "run 'CREATE EXTENSION vector' as the database owner"
        ) from None
    except psycopg.errors.FeatureNotSupported as exc:
        raise StoreError(f"the pgvector extension is not installed on this server ({exc.diag.message_primary})") from None
    connection.execute("CREATE SCHEMA IF NOT EXISTS rap")
    connection.execute("CREATE TABLE IF NOT EXISTS rap.schema_version (version integer NOT NULL)")


def migrate(connection: psycopg.Connection) -> None:
    """Bring the schema up to date, in one transaction, with other processes waiting."""
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        _prelude(connection)
        row = connection.execute("SELECT version FROM rap.schema_version").fetchone()
        version = row[0] if row else 0
        if version > len(MIGRATIONS):
            raise StoreError(
                f"this database has rap schema version {version}, newer than this rap knows "
                f"({len(MIGRATIONS)}); upgrade rap-mllm"
            )
        for number in range(version, len(MIGRATIONS)):
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    connection.execute(statement)  # type: ignore[arg-type]
        if row is None:
            connection.execute("INSERT INTO rap.schema_version VALUES (%s)", (len(MIGRATIONS),))
        elif version < len(MIGRATIONS):
            connection.execute("UPDATE rap.schema_version SET version = %s", (len(MIGRATIONS),))


def hnsw_index_name(dim: int) -> str:
    return f"vectors_hnsw_{dim}"


def ensure_hnsw_index(connection: psycopg.Connection, dim: int) -> None:
    """Create the HNSW index for vectors of ``dim`` dimensions if none exists yet.

    Called before the first vector of a new dimension is written, when the
    index covers no row yet and so builds at once.
    """
    if dim > HNSW_MAX_DIM:
        return
    exists = "SELECT 1 FROM pg_class WHERE relname = %s AND relnamespace = 'rap'::regnamespace"
    if connection.execute(exists, (hnsw_index_name(dim),)).fetchone():
        return  # CREATE INDEX IF NOT EXISTS would still wait for every writer of the table
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        connection.execute(
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {name} ON rap.vectors USING hnsw ((embedding::vector({dim})) vector_l2_ops) "
                "WHERE dim = {dim}"
            ).format(name=sql.Identifier(hnsw_index_name(dim)), dim=sql.Literal(dim))
        )
