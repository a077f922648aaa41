-- Users who put something in the cart and never bought anything, with their cart value.
CREATE OR REPLACE TABLE REPORTING.ABANDONED_CART_USERS AS
SELECT
    c.user_id,
    count(*) AS carted_items,
    round(sum(c.price), 2) AS cart_value
FROM RAW.EVENTS AS c
WHERE c.event_type = 'cart'
  AND NOT EXISTS (
      SELECT 1 FROM RAW.EVENTS AS p
      WHERE p.user_id = c.user_id AND p.event_type = 'purchase'
  )
GROUP BY c.user_id
ORDER BY cart_value DESC, c.user_id;
