"""The conversation store: conversations, tags, the message tree, shares, and full-text search.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("title_is_auto", sa.Boolean, nullable=False),
        sa.Column("model", sa.String(200)),
        sa.Column("system_prompt", sa.Text),
        sa.Column("pinned", sa.Boolean, nullable=False),
        sa.Column("archived", sa.Boolean, nullable=False),
        sa.Column("active_leaf_id", sa.String(32)),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_index("ix_conversations_owner_updated", "conversations", ["owner", "archived", "updated_at", "id"])
    op.create_table(
        "conversation_tags",
        sa.Column("conversation_id", sa.String(32), sa.ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("tag", sa.String(64), primary_key=True),
    )
    op.create_index("ix_conversation_tags_tag", "conversation_tags", ["tag"])
    op.create_table(
        "messages",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("conversation_id", sa.String(32), sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("parent_id", sa.String(32)),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("model", sa.String(200)),
        sa.Column("error", sa.Text),
        sa.Column("input_tokens", sa.Integer),
        sa.Column("output_tokens", sa.Integer),
        sa.Column("cost_usd", sa.Float),
        sa.Column("request_id", sa.String(64)),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
    )
    op.create_index("ix_messages_conversation_seq", "messages", ["conversation_id", "seq"])
    op.create_index("ix_messages_request", "messages", ["request_id"])
    op.create_table(
        "shares",
        sa.Column("token", sa.String(64), primary_key=True),
        sa.Column("conversation_id", sa.String(32), sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("snapshot", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("revoked_at", TZ),
    )
    op.create_index("ix_shares_conversation_id", "shares", ["conversation_id"])

    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE messages ADD COLUMN search tsvector GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED")
        op.execute("CREATE INDEX ix_messages_search ON messages USING gin (search)")
        op.execute("ALTER TABLE conversations ADD COLUMN search tsvector GENERATED ALWAYS AS (to_tsvector('simple', title)) STORED")
        op.execute("CREATE INDEX ix_conversations_search ON conversations USING gin (search)")
    else:
        # FTS5 tables whose rowids are the rowids of the rows they index, kept in step by triggers.
        op.execute("CREATE VIRTUAL TABLE messages_fts USING fts5(body, tokenize='unicode61')")
        op.execute(
            "CREATE TRIGGER messages_ai AFTER INSERT ON messages BEGIN INSERT INTO messages_fts(rowid, body) VALUES (new.rowid, new.content); END"
        )
        op.execute(
            "CREATE TRIGGER messages_au AFTER UPDATE OF content ON messages BEGIN UPDATE messages_fts SET body = new.content WHERE rowid = new.rowid; END"
        )
        op.execute("CREATE TRIGGER messages_ad AFTER DELETE ON messages BEGIN DELETE FROM messages_fts WHERE rowid = old.rowid; END")
        op.execute("CREATE VIRTUAL TABLE titles_fts USING fts5(body, tokenize='unicode61')")
        op.execute(
            "CREATE TRIGGER conversations_ai AFTER INSERT ON conversations BEGIN INSERT INTO titles_fts(rowid, body) VALUES (new.rowid, new.title); END"
        )
        op.execute(
            "CREATE TRIGGER conversations_au AFTER UPDATE OF title ON conversations BEGIN UPDATE titles_fts SET body = new.title WHERE rowid = new.rowid; END"
        )
        op.execute(
            "CREATE TRIGGER conversations_ad AFTER DELETE ON conversations BEGIN DELETE FROM titles_fts WHERE rowid = old.rowid; END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS messages_fts")
        op.execute("DROP TABLE IF EXISTS titles_fts")
    for table in ("shares", "messages", "conversation_tags", "conversations"):
        op.drop_table(table)
