-- The journal's functions keep one generic plan per session (plan_cache_mode =
-- force_generic_plan, set in 0006): planned at a session's first call and kept. A session
-- that first called them while money_movements was empty or small (a new database, the first
-- pass of a new book) planned its reads of the journal as sequential scans, the cheapest plan
-- of a small table, and kept them while the table grew by 500 rows a batch: at 100,000 due
-- the claim took 310 ms a batch instead of 100, and a pass ran at half the rate of the code
-- before the journal (bench/side_by_side.py). Every statement in these functions reaches its
-- rows by key (the journal's id and attempt indexes, installments' primary key), so no
-- sequential scan is ever the right plan for them: forbid it, whatever size the tables had
-- when the plan was made. (Custom plans instead were measured slower: 40 s against 20 s of
-- claiming over 100,000.)
ALTER FUNCTION money_apply_v1(bigint[]) SET enable_seqscan = off;
ALTER FUNCTION money_present_v1(bigint[], bigint[], bigint[], bigint[], bigint[], date, text[])
    SET enable_seqscan = off;
ALTER FUNCTION money_follow_v1(bigint[], text[], boolean[], date[], text[], date, text)
    SET enable_seqscan = off;
ALTER FUNCTION money_replan_v1(bigint[], date, date, text, text) SET enable_seqscan = off;
