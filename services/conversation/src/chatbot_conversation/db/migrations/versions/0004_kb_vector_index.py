"""On SQLite, passages' vectors are searched in sqlite-vec `vec0` tables (one per vector size, partitioned by
knowledge base), which only a connection with the extension can write. The service's own connections cannot load it,
so triggers on `kb_chunks` note each inserted or deleted passage in `kb_vec_pending`, and the vector index's own
connections bring the `vec0` tables up to date from it (`SqliteVec.sync`). PostgreSQL needs none of this.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("CREATE TABLE kb_vec_pending (seq INTEGER PRIMARY KEY AUTOINCREMENT, chunk_id INTEGER NOT NULL)")
    op.execute("CREATE TRIGGER kb_chunks_vec_ai AFTER INSERT ON kb_chunks BEGIN INSERT INTO kb_vec_pending(chunk_id) VALUES (new.id); END")
    op.execute("CREATE TRIGGER kb_chunks_vec_ad AFTER DELETE ON kb_chunks BEGIN INSERT INTO kb_vec_pending(chunk_id) VALUES (old.id); END")
    op.execute("INSERT INTO kb_vec_pending(chunk_id) SELECT id FROM kb_chunks ORDER BY id")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # The vec0 tables stay: dropping a virtual table needs its module, which this connection cannot load. They are
    # rebuilt from `kb_chunks` when the revision is applied again (every passage is pending then).
    for trigger in ("kb_chunks_vec_ai", "kb_chunks_vec_ad"):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.execute("DROP TABLE IF EXISTS kb_vec_pending")
