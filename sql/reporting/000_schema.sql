-- The reporting layer, refreshed from RAW.EVENTS after each landed month: tables by date are
-- replaced for the month that changed, all-time tables whole; a month run again gives the same numbers.
CREATE SCHEMA IF NOT EXISTS REPORTING;
