"""On PostgreSQL with pgvector created in the database (`CREATE EXTENSION vector`, before this revision runs),
passages' vectors are also kept as pgvector's `vector` in a narrow table of their own, `kb_vectors`, filled by a
trigger on `kb_chunks` and emptied with it (a foreign key that cascades). A search then compares stored `vector`s,
packed together, instead of converting each wide `kb_chunks` row's `real[]`. Without the extension (and on SQLite)
this revision does nothing; a search converts `real[]` at each row if pgvector comes later.

Revision ID: 0005
Revises: 0004
"""

from alembic import op
from sqlalchemy import text

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    if bind.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'vector'")).first() is None:
        return
    op.execute(
        "CREATE TABLE kb_vectors (chunk_id integer PRIMARY KEY REFERENCES kb_chunks(id) ON DELETE CASCADE, "
        "knowledge_base_id varchar(32) NOT NULL, embedding vector NOT NULL)"
    )
    op.execute("CREATE INDEX ix_kb_vectors_knowledge_base ON kb_vectors (knowledge_base_id)")
    op.execute(
        "CREATE FUNCTION kb_chunks_vector() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO kb_vectors (chunk_id, knowledge_base_id, embedding) "
        "VALUES (NEW.id, NEW.knowledge_base_id, NEW.embedding::vector); RETURN NULL; END $$"
    )
    op.execute("CREATE TRIGGER kb_chunks_vector AFTER INSERT ON kb_chunks FOR EACH ROW EXECUTE FUNCTION kb_chunks_vector()")
    op.execute("INSERT INTO kb_vectors SELECT id, knowledge_base_id, embedding::vector FROM kb_chunks")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS kb_chunks_vector ON kb_chunks")
    op.execute("DROP FUNCTION IF EXISTS kb_chunks_vector()")
    op.execute("DROP TABLE IF EXISTS kb_vectors")
