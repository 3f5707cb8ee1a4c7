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
down_revision = "0012"
branch_labels = None
depends_on = None

#: The columns every row of ``rows`` carries (the stored text, as inserted).
_ROW_COLUMNS = (
    "ts text, actor text, actor_type text, action text, target text, account text, "
    "session_id text, source text, outcome text, reason text, authority text, details text, "
    "canonical_middle text"
)


def _insert(table: str) -> str:
    # One INSERT for the whole batch (a statement per row costs more than its hashing).
    return f"""
            INSERT INTO {table} (seq, ts, actor, actor_type, action, target, account,
                                 session_id, source, outcome, reason, authority, details,
                                 prev_hash, hash)
            SELECT first_seq + e.position, x.ts, x.actor, x.actor_type, x.action, x.target,
                   x.account, x.session_id, x.source, x.outcome, x.reason, x.authority,
                   x.details, hashes[e.position], hashes[e.position + 1]
            FROM json_array_elements(p_rows) WITH ORDINALITY AS e(item, position),
                 json_to_record(e.item) AS x({_ROW_COLUMNS});"""


FUNCTION = f"""
CREATE OR REPLACE FUNCTION pamgate_audit_append(p_trail text, p_rows json)
RETURNS TABLE (out_seq integer, out_prev_hash text, out_hash text)
LANGUAGE plpgsql AS $fn$
DECLARE
    first_seq integer;
    head_hash text;
    middles text[];
    -- hashes[1] is the head's hash; hashes[i + 1] that of the i-th new event.
    hashes text[];
    i integer;
BEGIN
    IF p_trail NOT IN ('human', 'machine') THEN
        RAISE EXCEPTION 'no audit trail %', p_trail;
    END IF;
    SELECT h.seq, h.hash INTO first_seq, head_hash
        FROM audit_heads h WHERE h.trail = p_trail FOR UPDATE;
    IF NOT FOUND THEN
        -- The trail's first event; another node may be creating the head right now.
        INSERT INTO audit_heads (trail, seq, hash) VALUES (p_trail, 0, repeat('0', 64))
            ON CONFLICT (trail) DO NOTHING;
        SELECT h.seq, h.hash INTO first_seq, head_hash
            FROM audit_heads h WHERE h.trail = p_trail FOR UPDATE;
    END IF;
    SELECT array_agg(e.item ->> 'canonical_middle' ORDER BY e.position) INTO middles
        FROM json_array_elements(p_rows) WITH ORDINALITY AS e(item, position);
    hashes := ARRAY[head_hash];
    FOR i IN 1 .. coalesce(array_length(middles, 1), 0) LOOP
        -- The canonical serialisation: ["trail",seq,<the rest as sent>,"prev_hash"].
        hashes := hashes || encode(sha256(convert_to(
            '["' || p_trail || '",' || (first_seq + i)::text || middles[i]
            || ',"' || hashes[i] || '"]', 'UTF8')), 'hex');
    END LOOP;
    IF p_trail = 'human' THEN{_insert("audit_human")}
    ELSE{_insert("audit_machine")}
    END IF;
    UPDATE audit_heads SET seq = first_seq + coalesce(array_length(middles, 1), 0),
                           hash = hashes[array_length(hashes, 1)]
        WHERE trail = p_trail;
    RETURN QUERY SELECT first_seq + g.i, hashes[g.i], hashes[g.i + 1]
        FROM generate_series(1, coalesce(array_length(middles, 1), 0)) AS g(i)
        ORDER BY g.i;
END
$fn$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS pamgate_audit_append(text, json)")
