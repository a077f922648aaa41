-- Users counted as users, sessions as sessions.
{% import "reporting.j2" as reporting %}
{% set body %}
SELECT
    event_date,
    event_type,
    count(DISTINCT user_id) AS users,
    count(DISTINCT user_session) AS sessions
FROM RAW.EVENTS
WHERE 1 = 1 /*dates*/
GROUP BY event_date, event_type
ORDER BY event_date, event_type
{% endset %}
{{ reporting.refresh_by_date("REPORTING.DAILY_ACTIVE_USERS_BY_EVENT_TYPE", body, partition if partition is defined else none) }}
