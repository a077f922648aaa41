-- Revenue per purchasing session (an order), per day.
CREATE OR REPLACE TABLE REPORTING.AVERAGE_ORDER_VALUE_DAILY AS
SELECT
    event_date,
    count(DISTINCT user_session) AS orders,
    sum(price) AS revenue,
    sum(price) / nullif(count(DISTINCT user_session), 0) AS average_order_value
FROM RAW.EVENTS
WHERE event_type = 'purchase'
GROUP BY event_date
ORDER BY event_date;
