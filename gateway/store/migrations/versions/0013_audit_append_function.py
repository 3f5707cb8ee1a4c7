"""PostgreSQL: audit appends in one statement, the head row locked only while it runs.

``pamgate_audit_append(trail, rows)`` locks the trail's head row, chains and
inserts the rows, moves the head and returns each row's seq, prev_hash and
hash. The gateway sends the canonical serialisation of every row except its
seq and prev_hash (which only the locked head knows), so the function
concatenates and hashes; it never serialises anything itself, and the hashes
are exactly those ``AuditLog.verify`` recomputes. Called in autocommit, the
lock is held for the statement and its commit, not for the round trips of a
client-side transaction, which is what lets several processes append
thousands of events a second.

Additive only: a node of an older release still appends with ``SELECT ...
FOR UPDATE`` on the same head row, so both kinds of node serialise on it.
SQLite has no stored functions and needs none (one writer at a time).

Revision ID: 0013
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0009"
branch_labels = None
depends_on = None

#: The columns every row of ``rows`` carries (the stored text, as inserted).
_ROW_COLUMNS = (
    "ts text, actor text, actor_type text, action text, target text, account text, "
    "session_id text, source text, outcome text, reason text, authority text, details text, "
    "canonical_middle text"
)


def _insert(table: str) -> str:
    return f"""
            INSERT INTO {table} (seq, ts, actor, actor_type, action, target, account,
                                 session_id, source, outcome, reason, authority, details,
                                 prev_hash, hash)
            VALUES (head_seq, r.ts, r.actor, r.actor_type, r.action, r.target, r.account,
                    r.session_id, r.source, r.outcome, r.reason, r.authority, r.details,
                    head_hash, next_hash);"""


FUNCTION = f"""
CREATE OR REPLACE FUNCTION pamgate_audit_append(p_trail text, p_rows json)
RETURNS TABLE (out_seq integer, out_prev_hash text, out_hash text)
LANGUAGE plpgsql AS $fn$
DECLARE
    head_seq integer;
    head_hash text;
    next_hash text;
    r record;
BEGIN
    IF p_trail NOT IN ('human', 'machine') THEN
        RAISE EXCEPTION 'no audit trail %', p_trail;
    END IF;
    SELECT h.seq, h.hash INTO head_seq, head_hash
        FROM audit_heads h WHERE h.trail = p_trail FOR UPDATE;
    IF NOT FOUND THEN
        -- The trail's first event; another node may be creating the head right now.
        INSERT INTO audit_heads (trail, seq, hash) VALUES (p_trail, 0, repeat('0', 64))
            ON CONFLICT (trail) DO NOTHING;
        SELECT h.seq, h.hash INTO head_seq, head_hash
            FROM audit_heads h WHERE h.trail = p_trail FOR UPDATE;
    END IF;
    FOR r IN
        SELECT x.* FROM json_array_elements(p_rows) WITH ORDINALITY AS e(item, position),
            json_to_record(e.item) AS x({_ROW_COLUMNS})
        ORDER BY e.position
    LOOP
        head_seq := head_seq + 1;
        -- The canonical serialisation: ["trail",seq,<the rest as sent>,"prev_hash"].
        next_hash := encode(sha256(convert_to(
            '["' || p_trail || '",' || head_seq::text || r.canonical_middle
            || ',"' || head_hash || '"]', 'UTF8')), 'hex');
        IF p_trail = 'human' THEN{_insert("audit_human")}
        ELSE{_insert("audit_machine")}
        END IF;
        out_seq := head_seq;
        out_prev_hash := head_hash;
        out_hash := next_hash;
        RETURN NEXT;
        head_hash := next_hash;
    END LOOP;
    UPDATE audit_heads SET seq = head_seq, hash = head_hash WHERE trail = p_trail;
END
$fn$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS pamgate_audit_append(text, json)")
