-- Dashboard tile: revenue per day.
CREATE OR REPLACE TABLE REPORTING.DAILY_REVENUE AS
SELECT
    event_date,
    sum(price) AS revenue,
    count(*) AS purchases
FROM RAW.EVENTS
WHERE event_type = 'purchase'
GROUP BY event_date
ORDER BY event_date;
