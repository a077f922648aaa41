-- View → cart → purchase by day and top-level category; rates are event ratios.
{% import "reporting.j2" as reporting %}
{% set body %}
SELECT
    event_date,
    coalesce(category_l1, '(none)') AS category_l1,
    sum(CASE WHEN event_type = 'view' THEN 1 ELSE 0 END) AS views,
    sum(CASE WHEN event_type = 'cart' THEN 1 ELSE 0 END) AS carts,
    sum(CASE WHEN event_type = 'purchase' THEN 1 ELSE 0 END) AS purchases,
    sum(CASE WHEN event_type = 'cart' THEN 1 ELSE 0 END) * 1.0
        / nullif(sum(CASE WHEN event_type = 'view' THEN 1 ELSE 0 END), 0) AS view_to_cart,
    sum(CASE WHEN event_type = 'purchase' THEN 1 ELSE 0 END) * 1.0
        / nullif(sum(CASE WHEN event_type = 'cart' THEN 1 ELSE 0 END), 0) AS cart_to_purchase
FROM RAW.EVENTS
WHERE 1 = 1 /*dates*/
GROUP BY 1, 2
ORDER BY 1, 2
{% endset %}
{{ reporting.refresh_by_date("REPORTING.FUNNEL_DAILY", body, partition if partition is defined else none) }}
