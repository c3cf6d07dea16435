//! Registration rate: N accounts, `concurrency` at a time, each with the
//! two-request m.login.dummy flow.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{Ctx, Outcome, username};
use crate::{concurrent, matrix, stats};

/// Registers `sizes.users` accounts and reports users/s and per-account latency.
pub async fn run(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let n = ctx.sizes.users;
    let api = ctx.api.clone();
    let names: Vec<String> = (0..n).map(|i| username(ctx, "reg", i)).collect();
    let started = Instant::now();
    let latencies: Vec<Duration> = concurrent::run(n, ctx.sizes.concurrency, move |i| {
        let (api, name) = (api.clone(), names[i].clone());
        async move {
            let t0 = Instant::now();
            matrix::register(&api, &name).await?;
            Ok(t0.elapsed())
        }
    })
    .await?;
    let elapsed = started.elapsed();
    let summary = stats::Summary::of(&latencies);
    let mut outcome = Outcome {
        figures: vec![("users_per_s", stats::rate(n, elapsed))],
        params: vec![
            ("users", json!(n)),
            ("concurrency", json!(ctx.sizes.concurrency)),
            ("elapsed_s", json!(elapsed.as_secs_f64())),
        ],
    };
    if let Some(s) = summary {
        outcome.figures.push(("register_p50_ms", s.p50_ms));
        outcome.figures.push(("register_p99_ms", s.p99_ms));
    }
    Ok(outcome)
}
