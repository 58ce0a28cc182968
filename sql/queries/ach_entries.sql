-- entry_by_key --
-- The debit gateway $2 accepted under idempotency key $1, with its file's state
SELECT e.idempotency_key, e.trace_number, e.effective_on, e.amount_cents, e.file_name,
       f.written_at, f.exported_on
FROM ach_entries e
LEFT JOIN ach_files f ON f.file_name = e.file_name
WHERE e.idempotency_key = $1 AND e.gateway = $2;

-- insert_entry --
-- Accept debit $1 for gateway $2 with the next trace number of ODFI $3 (8 digits), to go out
-- under SEC code $9 and Company Entry Description $10; a key already accepted changes nothing
-- and returns no row
INSERT INTO ach_entries (idempotency_key, gateway, trace_number, effective_on, amount_cents,
                         token, individual_id, individual_name, sec_code, entry_description)
VALUES ($1, $2, $3::text || lpad(nextval('ach_trace_seq')::text, 7, '0'), $4, $5, $6, $7, $8,
        $9, $10)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING idempotency_key, trace_number, effective_on, amount_cents, file_name,
          NULL::timestamptz AS written_at, NULL::date AS exported_on;

-- lock_exports --
-- Serialize exports for the rest of the transaction (file id modifiers and claims)
SELECT pg_advisory_xact_lock($1::bigint);

-- dates_to_file --
-- The (effective date, SEC code, entry description) groups of gateway $1 with unfiled debits,
-- effective on or before $2
SELECT DISTINCT effective_on, sec_code, entry_description
FROM ach_entries
WHERE file_name IS NULL AND gateway = $1 AND effective_on <= $2
ORDER BY effective_on, sec_code, entry_description;

-- modifiers_used --
-- The file id modifiers of files created in [$1, $2)
SELECT file_id_modifier FROM ach_files WHERE created_at >= $1 AND created_at < $2;

-- insert_file --
-- Open the record of file $1 (gateway $2, SEC code $3, effective $4, exported on business
-- date $5, file id modifier $6, created at $7, Company Entry Description $8)
INSERT INTO ach_files (file_name, gateway, sec_code, effective_on, exported_on,
                       file_id_modifier, created_at, entry_description)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8);

-- claim_entries --
-- Put every unfiled debit of gateway $2 with SEC code $3, effective on $4 and entry
-- description $5 into file $1, and record the file's count and total
WITH claimed AS (
    UPDATE ach_entries
    SET file_name = $1
    WHERE file_name IS NULL AND gateway = $2 AND sec_code = $3 AND effective_on = $4
      AND entry_description = $5
    RETURNING amount_cents
)
UPDATE ach_files
SET entry_count = (SELECT count(*) FROM claimed),
    total_cents = (SELECT coalesce(sum(amount_cents), 0) FROM claimed)
WHERE file_name = $1
RETURNING entry_count, total_cents;

-- delete_file --
-- Drop the record of file $1, which claimed no debit
DELETE FROM ach_files WHERE file_name = $1 AND entry_count = 0;

-- unwritten_files --
-- Files of gateway $1 claimed but not yet written to the outbox, oldest first
SELECT file_name, sec_code, entry_description, effective_on, file_id_modifier, entry_count,
       total_cents, created_at
FROM ach_files
WHERE written_at IS NULL AND gateway = $1
ORDER BY created_at, file_name;

-- file_entries --
-- The debits of file $1 in trace number order
SELECT idempotency_key, trace_number, amount_cents, token, individual_id, individual_name
FROM ach_entries
WHERE file_name = $1
ORDER BY trace_number;

-- mark_written --
-- File $1 is on disk in the outbox
UPDATE ach_files SET written_at = now() WHERE file_name = $1 AND written_at IS NULL;

-- keys_by_trace --
-- The idempotency keys of the debits with trace numbers $1
SELECT trace_number, idempotency_key FROM ach_entries WHERE trace_number = ANY ($1::text[]);
