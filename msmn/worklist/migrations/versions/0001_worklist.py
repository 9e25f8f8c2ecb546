"""The worklist's first schema: notes, suggestions, final codes, the audit log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worklist_notes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("note_id", sa.String(256), nullable=False, unique=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("loaded_at", sa.DateTime(), nullable=False),
        sa.Column("claimed_by", sa.String(128)),
        sa.Column("claimed_at", sa.DateTime()),
        sa.Column("submitted_by", sa.String(128)),
        sa.Column("submitted_at", sa.DateTime()),
        sa.Column("seconds", sa.Float),
    )
    op.create_index("ix_worklist_open_notes", "worklist_notes", ["id"], sqlite_where=sa.text("submitted_at IS NULL"),
                    postgresql_where=sa.text("submitted_at IS NULL"))
    op.create_table(
        "worklist_suggestions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("note_pk", sa.Integer, sa.ForeignKey("worklist_notes.id"), nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("probability", sa.Float),
        sa.Column("synonym", sa.Text),
        sa.Column("evidence", sa.JSON, nullable=False),
    )
    op.create_index("ix_worklist_suggestions_note_pk", "worklist_suggestions", ["note_pk"])
    op.create_table(
        "worklist_final_codes",
        sa.Column("note_pk", sa.Integer, sa.ForeignKey("worklist_notes.id"), primary_key=True),
        sa.Column("code", sa.String(32), primary_key=True),
        sa.Column("origin", sa.String(16), nullable=False),
    )
    op.create_table(
        "worklist_audit",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("coder", sa.String(128), nullable=False),
        sa.Column("note_pk", sa.Integer, sa.ForeignKey("worklist_notes.id"), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("code", sa.String(32)),
        sa.Column("model", sa.String(128), nullable=False),
    )
    op.create_index("ix_worklist_audit_note", "worklist_audit", ["note_pk", "action", "coder"])


def downgrade() -> None:
    for table in ("worklist_audit", "worklist_final_codes", "worklist_suggestions", "worklist_notes"):
        op.drop_table(table)
