-- NACHA file gateway: the debits accepted for a file, and the files written.
--
-- An entry holds the vault TOKEN of the customer's account, never the account number; the
-- account is resolved from the vault outside the database when the file is rendered. The
-- trace number (ODFI id, 8 digits, + a 7-digit sequence) is fixed when the debit is accepted,
-- so a file re-rendered after a crash carries the same traces. file_name is set, once, when
-- an export claims the entry for a file.
--
-- entry_description is the Company Entry Description (batch header positions 54-63) the
-- entry goes out under, fixed when the debit is accepted: 'RETRY PYMT' for a reinitiation
-- (NACHA Rules 2.12.4), the configured description otherwise. A file holds the entries of one
-- (effective date, SEC code, entry description), so a reinitiation never shares a batch with
-- first presentments, and the file's row keeps the description it is rendered with.

CREATE SEQUENCE ach_trace_seq MINVALUE 1 MAXVALUE 9999999 NO CYCLE;

CREATE TABLE ach_files (
    file_name         text PRIMARY KEY,
    gateway           text NOT NULL,
    sec_code          text NOT NULL CHECK (sec_code IN ('PPD', 'WEB')),
    entry_description text NOT NULL
                      CHECK (btrim(entry_description) <> '' AND length(entry_description) <= 10),
    effective_on      date NOT NULL,
    exported_on       date NOT NULL,
    file_id_modifier  text NOT NULL CHECK (file_id_modifier ~ '^[A-Z0-9]$'),
    entry_count       integer NOT NULL DEFAULT 0 CHECK (entry_count >= 0),
    total_cents       bigint NOT NULL DEFAULT 0 CHECK (total_cents >= 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    written_at        timestamptz
);
-- Files claimed but not yet on disk (the export died between commit and rename).
CREATE INDEX ach_files_unwritten ON ach_files (created_at) WHERE written_at IS NULL;

CREATE TABLE ach_entries (
    idempotency_key  text PRIMARY KEY,
    gateway          text NOT NULL,
    trace_number     text NOT NULL UNIQUE CHECK (trace_number ~ '^[0-9]{15}$'),
    effective_on     date NOT NULL,
    amount_cents     bigint NOT NULL CHECK (amount_cents > 0),
    token            text NOT NULL,
    individual_id    text NOT NULL DEFAULT '',
    individual_name  text NOT NULL DEFAULT '',
    sec_code         text NOT NULL CHECK (sec_code IN ('PPD', 'WEB')),
    entry_description text NOT NULL
                     CHECK (btrim(entry_description) <> '' AND length(entry_description) <= 10),
    file_name        text REFERENCES ach_files (file_name),
    created_at       timestamptz NOT NULL DEFAULT now()
);
-- Unfiled entries by effective date (file_name IS NULL), and a file's entries.
CREATE INDEX ach_entries_file ON ach_entries (file_name, effective_on);
