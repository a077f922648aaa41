//! `sample-data`: generated months of the e-commerce dataset, in its exact format.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::{CliResult, fail};
use crate::dataset::generate::{Dirt, Options, write_month};
use crate::spec::{Month, MonthRange};

pub(super) async fn sample_data(
    months: &str,
    rows_per_day: u64,
    out: &Path,
    seed: u64,
    dirt: Option<f64>,
) -> CliResult {
    let (from, to) = months.split_once("..").unwrap_or((months, months));
    let from: Month = from.parse().map_err(fail)?;
    let to: Month = to.parse().map_err(fail)?;
    if from > to {
        return Err(fail(format!("--months {months}: {from} is after {to}")));
    }
    if rows_per_day == 0 {
        return Err(fail("--rows-per-day must be at least 1"));
    }
    if let Some(rate) = dirt.filter(|r| !(0.0..=0.2).contains(r)) {
        return Err(fail(format!(
            "--dirt is a rate between 0 and 0.2, not {rate}"
        )));
    }
    let opts = Options {
        rows_per_day,
        seed,
        dirt: dirt.filter(|r| *r > 0.0).map(Dirt::at),
    };
    for month in (MonthRange { from, to }).months() {
        let started = std::time::Instant::now();
        let out = out.to_path_buf();
        let stats = tokio::task::spawn_blocking(move || write_month(month, &opts, &out))
            .await
            .map_err(|e| fail(format!("the generator stopped: {e}")))?
            .map_err(|e| fail(format!("writing {}: {e}", month.name())))?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{}: {} rows, {:.1} MB, {:.2}s ({:.2} M rows/s)",
            stats.path.display(),
            stats.rows,
            stats.bytes as f64 / 1e6,
            secs,
            stats.rows as f64 / secs / 1e6
        );
    }
    Ok(ExitCode::SUCCESS)
}
