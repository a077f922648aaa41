-- The reporting layer: rebuilt from RAW.EVENTS after each landed month. Every table is replaced
-- whole, so running a month again gives the same numbers.
CREATE SCHEMA IF NOT EXISTS REPORTING;
