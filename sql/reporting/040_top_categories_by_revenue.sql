-- Dashboard tile: top 15 categories by revenue, all time (filter RAW.EVENTS for a period).
CREATE OR REPLACE TABLE REPORTING.TOP_CATEGORIES_BY_REVENUE AS
SELECT
    coalesce(category_code, '(none)') AS category_code,
    round(sum(price), 2) AS revenue,
    count(*) AS purchases
FROM RAW.EVENTS
WHERE event_type = 'purchase'
GROUP BY 1
ORDER BY revenue DESC, category_code
LIMIT 15;
