-- entry_by_key --
-- The debit gateway $2 accepted under idempotency key $1, with its file's state; effective_on
-- is its file's effective entry date once filed
SELECT e.idempotency_key, e.trace_number, coalesce(f.effective_on, e.effective_on) AS effective_on,
       e.amount_cents, e.file_name, f.written_at, f.exported_on
FROM ach_entries e
LEFT JOIN ach_files f ON f.file_name = e.file_name
WHERE e.idempotency_key = $1 AND e.gateway = $2;

-- insert_entry --
-- Accept debit $1 of customer $11 for gateway $2 with the next free trace number of ODFI $3
-- (8 digits), requested effective $4, to go out under SEC code $9 and Company Entry
-- Description $10; a key already accepted changes nothing and returns no row
INSERT INTO ach_entries (idempotency_key, customer_id, gateway, trace_number, effective_on,
                         requested_on, amount_cents, token, individual_id, individual_name,
                         sec_code, entry_description)
VALUES ($1, $11, $2, ach_next_trace_v1($3::text), $4, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (idempotency_key, customer_id) DO NOTHING
RETURNING idempotency_key, trace_number, effective_on, amount_cents, file_name,
          NULL::timestamptz AS written_at, NULL::date AS exported_on;

-- insert_prenote --
-- Accept prenote $1 (zero dollars) of customer $9 for gateway $2 with the next free trace
-- number of ODFI $3, requested effective $4, for token $5 named $6, under SEC code $7 and
-- Company Entry Description $8; a key already accepted changes nothing and returns no row
INSERT INTO ach_entries (idempotency_key, customer_id, gateway, trace_number, effective_on,
                         requested_on, amount_cents, token, individual_id, individual_name,
                         sec_code, entry_description, prenote)
VALUES ($1, $9, $2, ach_next_trace_v1($3::text), $4, $4, 0, $5, '', $6, $7, $8, true)
ON CONFLICT (idempotency_key, customer_id) DO NOTHING
RETURNING idempotency_key, trace_number, effective_on, amount_cents, file_name,
          NULL::timestamptz AS written_at, NULL::date AS exported_on;

-- lock_exports --
-- Serialize exports for the rest of the transaction (file id modifiers and claims). On Citus
-- the entries have a foreign key to the files (a reference table), so a transaction that
-- writes files after reading entries over every shard must use one connection per node
-- (citus.multi_shard_modify_mode); plain PostgreSQL keeps the setting as a placeholder.
SELECT pg_advisory_xact_lock($1::bigint),
       set_config('citus.multi_shard_modify_mode', 'sequential', true);

-- dates_to_file --
-- The (effective date, SEC code, entry description) groups of gateway $1 with unfiled debits
-- requested on or before $2; a file written now is effective on $3 at the earliest
SELECT DISTINCT greatest(coalesce(requested_on, effective_on), $3::date) AS effective_on,
       sec_code, entry_description
FROM ach_entries
WHERE file_name IS NULL AND gateway = $1 AND coalesce(requested_on, effective_on) <= $2
ORDER BY effective_on, sec_code, entry_description;

-- file_candidates --
-- The unfiled debits of gateway $1 with SEC code $2 and entry description $3, requested on or
-- before $5, that a file effective $4 holds when no file may be effective before $6
SELECT idempotency_key, customer_id, trace_number, amount_cents, token, individual_id,
       individual_name, prenote
FROM ach_entries
WHERE file_name IS NULL AND gateway = $1 AND sec_code = $2 AND entry_description = $3
  AND coalesce(requested_on, effective_on) <= $5
  AND greatest(coalesce(requested_on, effective_on), $6::date) = $4
ORDER BY trace_number;

-- modifiers_used --
-- The file id modifiers of files whose header shows creation date $1
SELECT file_id_modifier FROM ach_files
WHERE (coalesce(created_local, created_at AT TIME ZONE 'UTC'))::date = $1;

-- insert_file --
-- Open the record of file $1 (gateway $2, SEC code $3, effective $4, exported on business
-- date $5, file id modifier $6, created at $7 which the header shows as $9, Company Entry
-- Description $8)
INSERT INTO ach_files (file_name, gateway, sec_code, effective_on, exported_on,
                       file_id_modifier, created_at, entry_description, created_local)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9);

-- claim_entries --
-- Put the unfiled debits with keys $3 of customers $2 (one shard group: collector/db/
-- routing.py) into file $1 under its effective entry date $4, and add them to the file's
-- count and total (sql/0023); the file's count and total after
SELECT entry_count, total_cents
FROM ach_claim_entries_v1($1::text, $2::bigint[], $3::text[], $4::date);

-- release_entries --
-- Take the debits with keys $3 of customers $2 (one shard group) out of file $1 (not yet on
-- disk), unfiled again, and take them off the file's count and total (sql/0023); the file's
-- count and total after, no row when the file is written
SELECT entry_count, total_cents
FROM ach_release_entries_v1($1::text, $2::bigint[], $3::text[]);

-- delete_file --
-- Drop the record of file $1, which holds no debit
DELETE FROM ach_files WHERE file_name = $1 AND entry_count = 0;

-- unwritten_files --
-- Files of gateway $1 claimed but not yet written to the outbox, oldest first
SELECT file_name, sec_code, entry_description, effective_on, file_id_modifier, entry_count,
       total_cents, created_at, created_local
FROM ach_files
WHERE written_at IS NULL AND gateway = $1
ORDER BY created_at, file_name;

-- file_entries --
-- The debits (and prenotes) of file $1 in trace number order
SELECT idempotency_key, customer_id, trace_number, amount_cents, token, individual_id,
       individual_name, prenote
FROM ach_entries
WHERE file_name = $1
ORDER BY trace_number;

-- mark_written --
-- File $1 is on disk in the outbox since $2 (the writing export's clock)
UPDATE ach_files SET written_at = $2 WHERE file_name = $1 AND written_at IS NULL;

-- keys_by_trace --
-- The idempotency key (and customer) of the debit each trace number of $1 names (with amount
-- $2, 0 when unknown): a trace number repeats after the sequence rolls over, so the most
-- recent filed entry of that trace, preferring one of the same amount
SELECT DISTINCT ON (r.trace_number) r.trace_number, e.idempotency_key, e.customer_id
FROM unnest($1::text[], $2::bigint[]) AS r (trace_number, amount_cents)
JOIN ach_entries e ON e.trace_number = r.trace_number
ORDER BY r.trace_number, (e.file_name IS NOT NULL) DESC, (e.amount_cents = r.amount_cents) DESC,
         e.created_at DESC;

-- insert_change --
-- Record a notification of change for the debit with key $1 of customer $10 and original
-- trace $2, sent as the bank's trace $3: change code $4, corrected routing $5, account last
-- four $6, transaction code $7, other corrected data $8, received on business date $9; one
-- already recorded changes nothing and returns no row. The entry's customer (each entry
-- names it, sql/0022) comes from keys_by_trace: one shard.
INSERT INTO ach_notifications_of_change (customer_id, idempotency_key, original_trace,
                                         notice_trace, change_code, corrected_routing,
                                         corrected_account_last4, corrected_transaction_code,
                                         corrected_text, received_on)
VALUES ($10, $1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (original_trace, notice_trace, change_code, customer_id) DO NOTHING
RETURNING id;
