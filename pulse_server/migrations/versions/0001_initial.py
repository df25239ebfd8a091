"""users, tokens, grants, entries, applied mutations, conflicts

Revision ID: 0001
Revises:
Create Date: 2026-11-27 21:27:00.553054
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('users',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('username', sa.Text(), nullable=False),
    sa.Column('password_hash', sa.Text(), nullable=False),
    sa.Column('is_coach', sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('username')
    )
    op.create_table('applied_mutations',
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('client_id', sa.Text(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('result', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('applied_at', sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'client_id', 'seq')
    )
    op.create_index('applied_mutations_applied_at', 'applied_mutations', ['applied_at'], unique=False)
    op.create_table('conflicts',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('date', sa.Date(), nullable=False),
    sa.Column('client_id', sa.Text(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('field', sa.Text(), nullable=False),
    sa.Column('kept', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('lost', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('kept_hlc', sa.Text(), nullable=True),
    sa.Column('lost_hlc', sa.Text(), nullable=True),
    sa.Column('rule', sa.Text(), nullable=False),
    sa.Column('clamped', sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('conflicts_user_date', 'conflicts', ['user_id', 'date'], unique=False)
    op.create_table('entries',
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('date', sa.Date(), nullable=False),
    sa.Column('sleep_hours', sa.Numeric(precision=4, scale=2), nullable=True),
    sa.Column('hrv_ms', sa.Numeric(precision=5, scale=2), nullable=True),
    sa.Column('hrv_method', sa.Text(), nullable=True),
    sa.Column('steps', sa.Integer(), nullable=True),
    sa.Column('weight_kg', sa.Numeric(precision=5, scale=2), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('score', sa.SmallInteger(), nullable=True),
    sa.Column('score_version', sa.SmallInteger(), nullable=True),
    sa.Column('deleted', sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column('sleep_hours_hlc', sa.Text(), nullable=True),
    sa.Column('sleep_hours_src', sa.Text(), nullable=True),
    sa.Column('hrv_ms_hlc', sa.Text(), nullable=True),
    sa.Column('hrv_ms_src', sa.Text(), nullable=True),
    sa.Column('steps_hlc', sa.Text(), nullable=True),
    sa.Column('steps_src', sa.Text(), nullable=True),
    sa.Column('weight_kg_hlc', sa.Text(), nullable=True),
    sa.Column('weight_kg_src', sa.Text(), nullable=True),
    sa.Column('note_hlc', sa.Text(), nullable=True),
    sa.Column('note_src', sa.Text(), nullable=True),
    sa.Column('deleted_hlc', sa.Text(), nullable=True),
    sa.Column('deleted_src', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'date'),
    sa.CheckConstraint("hrv_method IN ('rmssd', 'sdnn')", name='entries_hrv_method'),
    )
    op.create_table('grants',
    sa.Column('athlete_id', sa.BigInteger(), nullable=False),
    sa.Column('coach_id', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.ForeignKeyConstraint(['athlete_id'], ['users.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['coach_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('athlete_id', 'coach_id')
    )
    op.create_index('grants_coach', 'grants', ['coach_id'], unique=False)
    op.create_table('tokens',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('token_hash', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_index('tokens_user', 'tokens', ['user_id'], unique=False)
    # Sequence numbers of writes made through the REST API (client id "api"), so that PUT and DELETE
    # go through the same exactly-once push path as devices.
    op.execute("CREATE SEQUENCE api_mutation_seq")


def downgrade() -> None:
    op.execute("DROP SEQUENCE api_mutation_seq")
    op.drop_index('tokens_user', table_name='tokens')
    op.drop_table('tokens')
    op.drop_index('grants_coach', table_name='grants')
    op.drop_table('grants')
    op.drop_table('entries')
    op.drop_index('conflicts_user_date', table_name='conflicts')
    op.drop_table('conflicts')
    op.drop_index('applied_mutations_applied_at', table_name='applied_mutations')
    op.drop_table('applied_mutations')
    op.drop_table('users')
