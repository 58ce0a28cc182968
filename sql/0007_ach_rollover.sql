-- NACHA file gateway: dates as filed, traces that roll over, notifications of change.
--
-- 1. The effective entry date is decided when a file is written, not when a debit is accepted:
--    requested_on keeps what the engine asked for (the due date moved to a banking day), and
--    effective_on becomes the file's effective entry date when an export claims the entry
--    (never a day already past when the file is written). requested_on is NULL for entries
--    accepted before this migration: their effective_on is what was requested.
-- 2. created_local is the file's creation date and time as its header shows them: the
--    lessor's wall clock. NULL for files created before this migration (their header shows
--    UTC); the file id modifiers of a day are counted by that same date.
-- 3. ach_trace_seq rolls over. A trace number is unique within a file and among unfiled
--    entries (two unique indexes), and ach_next_trace_v1 does not reuse one filed within the
--    last 180 days while another is free; a return is matched to the most recent entry of its
--    trace.
-- 4. ach_notifications_of_change: the changes (C01-C13) a bank asked for in a return file, with
--    the corrected data masked: a corrected account number is kept as its last four only.

ALTER TABLE ach_entries ADD COLUMN requested_on date;
ALTER TABLE ach_files ADD COLUMN created_local timestamp;

ALTER SEQUENCE ach_trace_seq CYCLE;
ALTER TABLE ach_entries DROP CONSTRAINT ach_entries_trace_number_key;
CREATE INDEX ach_entries_trace ON ach_entries (trace_number, created_at);
CREATE UNIQUE INDEX ach_entries_file_trace ON ach_entries (file_name, trace_number)
    WHERE file_name IS NOT NULL;
CREATE UNIQUE INDEX ach_entries_unfiled_trace ON ach_entries (trace_number)
    WHERE file_name IS NULL;

-- The next trace number of ODFI p_odfi (8 digits): the sequence's next value, skipping one
-- still unfiled or filed for an effective date within the last 180 days (returns and
-- notifications of change still name it). Should 1,000 values in a row be that recent, the
-- first one not held by an unfiled entry is taken: origination never stops on the counter.
CREATE FUNCTION ach_next_trace_v1(p_odfi text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_trace text;
BEGIN
    FOR i IN 1..1000 LOOP
        v_trace := p_odfi || lpad(nextval('ach_trace_seq')::text, 7, '0');
        IF NOT EXISTS (
            SELECT 1 FROM ach_entries e
            WHERE e.trace_number = v_trace
              AND (e.file_name IS NULL OR e.effective_on > current_date - 180)
        ) THEN
            RETURN v_trace;
        END IF;
    END LOOP;
    LOOP
        v_trace := p_odfi || lpad(nextval('ach_trace_seq')::text, 7, '0');
        IF NOT EXISTS (
            SELECT 1 FROM ach_entries e WHERE e.trace_number = v_trace AND e.file_name IS NULL
        ) THEN
            RETURN v_trace;
        END IF;
    END LOOP;
END;
$$;

CREATE TABLE ach_notifications_of_change (
    id                         bigserial PRIMARY KEY,
    customer_id                bigint REFERENCES customers (id),
    -- The debit it corrects; NULL for a trace this engine never sent.
    idempotency_key            text,
    original_trace             text NOT NULL CHECK (original_trace ~ '^[0-9]{15}$'),
    -- The notification's own trace number (the bank's).
    notice_trace               text NOT NULL,
    change_code                text NOT NULL CHECK (change_code ~ '^C(0[1-9]|1[0-3])$'),
    corrected_routing          text CHECK (corrected_routing ~ '^[0-9]{9}$'),
    corrected_account_last4    text CHECK (length(corrected_account_last4) <= 4),
    corrected_transaction_code text CHECK (corrected_transaction_code ~ '^[0-9]{2}$'),
    -- Other corrected data (a name, an identification number), never an account number.
    corrected_text             text NOT NULL DEFAULT '',
    received_on                date NOT NULL,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    UNIQUE (original_trace, notice_trace, change_code)
);
CREATE INDEX ach_notifications_of_change_key ON ach_notifications_of_change (idempotency_key);

-- The file id modifiers already used on a day of the file header's creation date.
CREATE INDEX ach_files_created_on ON ach_files
    (((coalesce(created_local, created_at AT TIME ZONE 'UTC'))::date));
