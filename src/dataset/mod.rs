//! The e-commerce behaviour dataset (Open CDP / REES46, multi-category store): its file format,
//! a realistic generator of it, and its preparation into clean Parquet.
//!
//! One gzipped CSV per month, named like `2019-Oct.csv.gz`, with the header in [`HEADER`] and
//! rows in event-time order: `2019-10-01 00:00:04 UTC,view,1004237,2053013555631882655,
//! electronics.smartphone,apple,1081.98,535871217,c6bd7419-…`.

pub(crate) mod catalog;
pub(crate) mod generate;
pub(crate) mod prepare;
pub(crate) mod prepared;

/// The header line of every monthly file.
pub(crate) const HEADER: &str =
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session";

/// The column names, in file order.
pub(crate) const COLUMNS: [&str; 9] = [
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
];

/// Event types found in the dataset (`remove_from_cart` appears in some months).
pub(crate) const EVENT_TYPES: [&str; 4] = ["view", "cart", "purchase", "remove_from_cart"];

/// The file name of a month, as the dataset publishes it: `2019-Oct.csv.gz`.
pub(crate) fn month_file_name(month: crate::spec::Month) -> String {
    format!("{}.csv.gz", month.name())
}
