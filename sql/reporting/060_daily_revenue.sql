-- Dashboard tile: revenue per day.
{% import "reporting.j2" as reporting %}
{% set body %}
SELECT
    event_date,
    round(sum(price), 2) AS revenue,
    count(*) AS purchases
FROM RAW.EVENTS
WHERE event_type = 'purchase' /*dates*/
GROUP BY event_date
ORDER BY event_date
{% endset %}
{{ reporting.refresh_by_date("REPORTING.DAILY_REVENUE", body, partition if partition is defined else none) }}
