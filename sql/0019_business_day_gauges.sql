-- The business day's gauges (collector/jobs/gauges.py, sql/queries/stats.sql) read the
-- attempts and journal rows of one business date on every refresh (each pass's end, the
-- daemon's timer). Neither table had an index on as_of, so each refresh read the whole book.
--
-- BRIN, not B-tree: both tables are appended in business-date order (an attempt's as_of and a
-- journal row's as_of are the date of the pass or request that wrote it, and never change),
-- so a block range's min/max of as_of is narrow, and a BRIN index costs a few pages and almost
-- nothing per insert (a summary is widened only when a new row falls outside its range).
-- autosummarize: a filled range is summarized by autovacuum soon after, so a read of today
-- scans only the unsummarized tail and the ranges that hold today.
CREATE INDEX charge_attempts_as_of_brin ON charge_attempts USING brin (as_of)
    WITH (autosummarize = on);
CREATE INDEX money_movements_as_of_brin ON money_movements USING brin (as_of)
    WITH (autosummarize = on);
