-- Revenue per category per day: the dashboard's top-categories tile for a chosen period
-- (the all-time tile reads REPORTING.TOP_CATEGORIES_BY_REVENUE).
{% import "reporting.j2" as reporting %}
{% set body %}
SELECT
    event_date,
    coalesce(category_code, '(none)') AS category_code,
    round(sum(price), 2) AS revenue,
    count(*) AS purchases
FROM RAW.EVENTS
WHERE event_type = 'purchase' /*dates*/
GROUP BY 1, 2
ORDER BY 1, 2
{% endset %}
{{ reporting.refresh_by_date("REPORTING.CATEGORY_REVENUE_DAILY", body, partition if partition is defined else none) }}
