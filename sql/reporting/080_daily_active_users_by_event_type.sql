-- Users counted as users, sessions as sessions.
CREATE OR REPLACE TABLE REPORTING.DAILY_ACTIVE_USERS_BY_EVENT_TYPE AS
SELECT
    event_date,
    event_type,
    count(DISTINCT user_id) AS users,
    count(DISTINCT user_session) AS sessions
FROM RAW.EVENTS
GROUP BY event_date, event_type
ORDER BY event_date, event_type;
