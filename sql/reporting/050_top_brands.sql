-- Dashboard tile: top-selling brands by revenue and units.
CREATE OR REPLACE TABLE REPORTING.TOP_BRANDS AS
SELECT
    brand,
    round(sum(price), 2) AS revenue,
    count(*) AS units
FROM RAW.EVENTS
WHERE event_type = 'purchase' AND brand IS NOT NULL
GROUP BY brand
ORDER BY revenue DESC, brand
LIMIT 50;
