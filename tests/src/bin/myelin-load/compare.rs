//! Side by side: two JSON result files, each figure with its ratio.

use std::{fmt::Write as _, path::Path};

use anyhow::Context;
use serde_json::Value;

use crate::report::format_value;

/// Whether a bigger value of the figure `name` is better (rates) or worse
/// (latencies, memory).
pub fn higher_is_better(name: &str) -> bool {
    name.ends_with("_per_s")
}

/// Reads a result file written by `--json`.
pub fn load(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    match value {
        Value::Array(items) => Ok(items),
        _ => anyhow::bail!(
            "{} is not a myelin-load result (a JSON array)",
            path.display()
        ),
    }
}

/// The comparison table of `base` and `other`. `advantage` is how many times
/// better `other` is than `base` on each figure (below 1: worse).
pub fn table(base: &[Value], other: &[Value]) -> String {
    let label = |items: &[Value], fallback: &str| {
        items
            .first()
            .and_then(|i| i.get("label"))
            .and_then(Value::as_str)
            .unwrap_or(fallback)
            .to_owned()
    };
    let (base_label, other_label) = (label(base, "base"), label(other, "other"));
    let mut out = String::new();
    let _ = writeln!(out, "\ncompare: base = {base_label}, other = {other_label}");
    let _ = writeln!(
        out,
        "{:<18} {:<18} {:>12} {:>12} {:>11} {:>10}",
        "scenario", "figure", base_label, other_label, "other/base", "advantage"
    );
    let mut scenarios: Vec<&str> = Vec::new();
    for item in base.iter().chain(other) {
        if let Some(name) = item.get("scenario").and_then(Value::as_str)
            && !scenarios.contains(&name)
        {
            scenarios.push(name);
        }
    }
    for scenario in scenarios {
        let (b, o) = (find(base, scenario), find(other, scenario));
        let mut names: Vec<&str> = Vec::new();
        for item in [b, o].into_iter().flatten() {
            if let Some(figures) = item.get("figures").and_then(Value::as_object) {
                for name in figures.keys() {
                    if !names.contains(&name.as_str()) {
                        names.push(name);
                    }
                }
            }
        }
        for (side, item) in [(&base_label, b), (&other_label, o)] {
            if let Some(error) = item.and_then(failure) {
                let _ = writeln!(
                    out,
                    "{scenario:<18} {:<18} {side} failed: {error}",
                    "FAILED"
                );
            } else if item.is_none() {
                let _ = writeln!(out, "{scenario:<18} {:<18} {side} did not run it", "-");
            }
        }
        for name in names {
            let bv = b.and_then(|i| figure(i, name));
            let ov = o.and_then(|i| figure(i, name));
            let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), format_value);
            let (ratio, advantage) = match (bv, ov) {
                (Some(bv), Some(ov)) if bv > 0.0 && ov > 0.0 => {
                    let ratio = ov / bv;
                    let adv = if higher_is_better(name) {
                        ratio
                    } else {
                        1.0 / ratio
                    };
                    (format!("{ratio:.3}"), format!("{}x", format_value(adv)))
                }
                _ => ("-".to_owned(), "-".to_owned()),
            };
            let _ = writeln!(
                out,
                "{scenario:<18} {name:<18} {:>12} {:>12} {ratio:>11} {advantage:>10}",
                show(bv),
                show(ov)
            );
        }
    }
    out
}

fn find<'a>(items: &'a [Value], scenario: &str) -> Option<&'a Value> {
    items
        .iter()
        .find(|i| i.get("scenario").and_then(Value::as_str) == Some(scenario))
}

fn failure(item: &Value) -> Option<&str> {
    (item.get("ok") == Some(&Value::Bool(false))).then(|| {
        item.get("error")
            .and_then(Value::as_str)
            .unwrap_or("(no error recorded)")
    })
}

fn figure(item: &Value, name: &str) -> Option<f64> {
    item.get("figures")?.get(name)?.as_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ratios_and_advantage_follow_the_figure_direction() {
        let base = vec![
            json!({"scenario": "send-one-room", "label": "synapse", "ok": true,
            "figures": {"messages_per_s": 40.0, "send_p50_ms": 200.0}}),
        ];
        let other = vec![
            json!({"scenario": "send-one-room", "label": "myelin", "ok": true,
            "figures": {"messages_per_s": 4000.0, "send_p50_ms": 2.0}}),
        ];
        let t = table(&base, &other);
        let rate = t
            .lines()
            .find(|l| l.contains("messages_per_s"))
            .expect("rate line");
        assert!(
            rate.contains("100.000") && rate.contains("100.0x"),
            "{rate}"
        );
        let latency = t
            .lines()
            .find(|l| l.contains("send_p50_ms"))
            .expect("latency line");
        assert!(
            latency.contains("0.010") && latency.contains("100.0x"),
            "{latency}"
        );
    }

    #[test]
    fn failures_and_missing_scenarios_are_named() {
        let base = vec![
            json!({"scenario": "delivery", "label": "synapse", "ok": true,
            "figures": {"delivery_p50_ms": 58.0}}),
        ];
        let other = vec![
            json!({"scenario": "delivery", "label": "myelin", "ok": false,
            "error": "GET /_matrix/client/v3/sync answered 404 M_UNRECOGNIZED"}),
        ];
        let t = table(&base, &other);
        assert!(
            t.contains("myelin failed: GET /_matrix/client/v3/sync answered 404"),
            "{t}"
        );
        let line = t
            .lines()
            .find(|l| l.contains("delivery_p50_ms"))
            .expect("figure line");
        assert!(
            line.contains("58.00") && line.trim_end().ends_with('-'),
            "{line}"
        );
        assert!(table(&base, &[]).contains("myelin") || table(&base, &[]).contains("did not run"));
    }

    #[test]
    fn direction_by_suffix() {
        assert!(higher_is_better("users_per_s"));
        assert!(!higher_is_better("delivery_p99_ms"));
        assert!(!higher_is_better("rss_end_mib"));
    }
}
