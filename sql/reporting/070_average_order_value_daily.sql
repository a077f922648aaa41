-- Revenue per purchasing session (an order), per day.
{% import "reporting.j2" as reporting %}
{% set body %}
SELECT
    event_date,
    count(DISTINCT user_session) AS orders,
    round(sum(price), 2) AS revenue,
    round(sum(price) / nullif(count(DISTINCT user_session), 0), 2) AS average_order_value
FROM RAW.EVENTS
WHERE event_type = 'purchase' /*dates*/
GROUP BY event_date
ORDER BY event_date
{% endset %}
{{ reporting.refresh_by_date("REPORTING.AVERAGE_ORDER_VALUE_DAILY", body, partition if partition is defined else none) }}
