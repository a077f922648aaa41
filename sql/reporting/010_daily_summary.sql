CREATE OR REPLACE TABLE REPORTING.DAILY_SUMMARY AS
SELECT
    event_date,
    count(*) AS events,
    sum(CASE WHEN event_type = 'view' THEN 1 ELSE 0 END) AS views,
    sum(CASE WHEN event_type = 'cart' THEN 1 ELSE 0 END) AS carts,
    sum(CASE WHEN event_type = 'purchase' THEN 1 ELSE 0 END) AS purchases,
    coalesce(sum(CASE WHEN event_type = 'purchase' THEN price END), 0) AS revenue,
    count(DISTINCT user_id) AS users,
    count(DISTINCT user_session) AS sessions
FROM RAW.EVENTS
GROUP BY event_date
ORDER BY event_date;
