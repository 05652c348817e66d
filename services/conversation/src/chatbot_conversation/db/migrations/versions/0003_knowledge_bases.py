"""Knowledge bases: their documents, the documents' passages (text, place, vector), and the conversations that use them.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "knowledge_bases",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("embedding_model", sa.String(200), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_index("ix_knowledge_bases_owner", "knowledge_bases", ["owner", "created_at"])
    op.create_table(
        "kb_documents",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("knowledge_base_id", sa.String(32), sa.ForeignKey("knowledge_bases.id", ondelete="CASCADE"), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("key_id", sa.String(64)),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("media_type", sa.String(100), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("pages", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("text", sa.Text),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.UniqueConstraint("knowledge_base_id", "sha256", name="uq_kb_documents_digest"),
    )
    op.create_table(
        "kb_chunks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("knowledge_base_id", sa.String(32), nullable=False),
        sa.Column("document_id", sa.String(32), sa.ForeignKey("kb_documents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("page", sa.Integer),
        sa.Column("heading", sa.Text, nullable=False),
        sa.Column("start_at", sa.Integer, nullable=False),
        sa.Column("end_at", sa.Integer, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        # float32 little-endian bytes (sqlite-vec's own format) on SQLite; real[] on PostgreSQL (pgvector casts it).
        sa.Column("embedding", postgresql.ARRAY(sa.REAL) if postgres else sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("document_id", "position", name="uq_kb_chunks_position"),
    )
    op.create_index("ix_kb_chunks_knowledge_base", "kb_chunks", ["knowledge_base_id"])
    op.create_table(
        "conversation_knowledge_bases",
        sa.Column("conversation_id", sa.String(32), sa.ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("knowledge_base_id", sa.String(32), sa.ForeignKey("knowledge_bases.id", ondelete="CASCADE"), primary_key=True),
    )
    op.add_column("messages", sa.Column("sources", sa.Text))
    if postgres:
        op.execute(
            "ALTER TABLE kb_chunks ADD COLUMN search tsvector "
            "GENERATED ALWAYS AS (to_tsvector('english', heading || ' ' || content)) STORED"
        )
        op.execute("CREATE INDEX ix_kb_chunks_search ON kb_chunks USING gin (search)")
    else:
        # Stemmed (porter), so that a question's "refunds" finds a passage's "refund".
        op.execute("CREATE VIRTUAL TABLE kb_chunks_fts USING fts5(heading, body, tokenize='porter unicode61')")
        op.execute(
            "CREATE TRIGGER kb_chunks_ai AFTER INSERT ON kb_chunks BEGIN "
            "INSERT INTO kb_chunks_fts(rowid, heading, body) VALUES (new.id, new.heading, new.content); END"
        )
        op.execute("CREATE TRIGGER kb_chunks_ad AFTER DELETE ON kb_chunks BEGIN DELETE FROM kb_chunks_fts WHERE rowid = old.id; END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS kb_chunks_fts")
    op.drop_column("messages", "sources")
    for table in ("conversation_knowledge_bases", "kb_chunks", "kb_documents", "knowledge_bases"):
        op.drop_table(table)
