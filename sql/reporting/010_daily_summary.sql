{% import "reporting.j2" as reporting %}
{% set body %}
SELECT
    event_date,
    count(*) AS events,
    sum(CASE WHEN event_type = 'view' THEN 1 ELSE 0 END) AS views,
    sum(CASE WHEN event_type = 'cart' THEN 1 ELSE 0 END) AS carts,
    sum(CASE WHEN event_type = 'purchase' THEN 1 ELSE 0 END) AS purchases,
    round(coalesce(sum(CASE WHEN event_type = 'purchase' THEN price END), 0), 2) AS revenue,
    count(DISTINCT user_id) AS users,
    count(DISTINCT user_session) AS sessions
FROM RAW.EVENTS
WHERE 1 = 1 /*dates*/
GROUP BY event_date
ORDER BY event_date
{% endset %}
{{ reporting.refresh_by_date("REPORTING.DAILY_SUMMARY", body, partition if partition is defined else none) }}
