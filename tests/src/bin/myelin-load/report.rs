//! Results: the table on stdout and the JSON file (an array with one object
//! per scenario, each carrying the label, homeserver URL and timestamp).

use std::{fmt::Write as _, time::SystemTime};

use serde_json::{Map, Value, json};

use crate::scenarios::Outcome;

/// One scenario's result, as recorded.
pub struct Record {
    /// Scenario name.
    pub scenario: &'static str,
    /// When it started.
    pub started: SystemTime,
    /// Its figures, or why it failed.
    pub result: Result<Outcome, String>,
    /// 429 answers retried during it.
    pub retries_429: u64,
}

/// Where and under which name the run happened.
pub struct RunInfo<'a> {
    /// `--label`.
    pub label: &'a str,
    /// The homeserver URL.
    pub homeserver: &'a str,
}

/// The JSON array for `records`.
pub fn to_json(info: &RunInfo<'_>, records: &[Record]) -> Value {
    Value::Array(
        records
            .iter()
            .map(|r| {
                let mut o = json!({
                    "scenario": r.scenario,
                    "label": info.label,
                    "homeserver": info.homeserver,
                    "timestamp": rfc3339(r.started),
                    "ok": r.result.is_ok(),
                    "retries_429": r.retries_429,
                });
                match &r.result {
                    Ok(outcome) => {
                        o["figures"] = Value::Object(
                            outcome
                                .figures
                                .iter()
                                .map(|(k, v)| ((*k).to_owned(), json!(v)))
                                .collect(),
                        );
                        o["params"] = Value::Object(
                            outcome
                                .params
                                .iter()
                                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                                .collect::<Map<_, _>>(),
                        );
                    }
                    Err(e) => o["error"] = json!(e),
                }
                o
            })
            .collect(),
    )
}

/// The human-readable table for `records`.
pub fn table(info: &RunInfo<'_>, records: &[Record]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nmyelin-load: {} ({})", info.label, info.homeserver);
    let _ = writeln!(
        out,
        "{:<18} {:<18} {:>12}  notes",
        "scenario", "figure", "value"
    );
    for r in records {
        match &r.result {
            Ok(outcome) => {
                let notes = outcome
                    .params
                    .iter()
                    .map(|(k, v)| format!("{k}={}", compact(v)))
                    .chain((r.retries_429 > 0).then(|| format!("429_retries={}", r.retries_429)))
                    .collect::<Vec<_>>()
                    .join(" ");
                for (i, (name, value)) in outcome.figures.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{:<18} {:<18} {:>12}  {}",
                        if i == 0 { r.scenario } else { "" },
                        name,
                        format_value(*value),
                        if i == 0 { notes.as_str() } else { "" }
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(out, "{:<18} {:<18} {:>12}  {e}", r.scenario, "FAILED", "-");
            }
        }
    }
    out
}

fn compact(v: &Value) -> String {
    match v {
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() != 0.0) => {
            format!("{:.1}", n.as_f64().unwrap_or_default())
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Three significant-ish digits: 1234, 123.4, 12.34, 1.234.
pub fn format_value(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// `2026-11-28T03:12:59Z` for `t` (UTC, whole seconds).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_rfc3339() {
        let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(1_795_835_579)), "2026-11-28T03:12:59Z");
    }

    #[test]
    fn values_keep_three_or_four_digits() {
        assert_eq!(format_value(1234.56), "1235");
        assert_eq!(format_value(153.26), "153.3");
        assert_eq!(format_value(58.123), "58.12");
        assert_eq!(format_value(1.23456), "1.235");
    }

    #[test]
    fn json_has_one_object_per_scenario() {
        let info = RunInfo {
            label: "synapse",
            homeserver: "http://h",
        };
        let records = vec![
            Record {
                scenario: "register",
                started: SystemTime::UNIX_EPOCH,
                result: Ok(Outcome {
                    figures: vec![("users_per_s", 10.0)],
                    params: vec![("users", json!(5))],
                }),
                retries_429: 2,
            },
            Record {
                scenario: "delivery",
                started: SystemTime::UNIX_EPOCH,
                result: Err("GET /sync answered 404".to_owned()),
                retries_429: 0,
            },
        ];
        let v = to_json(&info, &records);
        assert_eq!(v[0]["figures"]["users_per_s"], json!(10.0));
        assert_eq!(v[0]["label"], "synapse");
        assert_eq!(v[0]["retries_429"], 2);
        assert_eq!(v[1]["ok"], false);
        assert_eq!(v[1]["error"], "GET /sync answered 404");
        assert_eq!(v[1]["timestamp"], "1970-01-01T00:00:00Z");
        let t = table(&info, &records);
        assert!(t.contains("users_per_s"), "{t}");
        assert!(t.contains("FAILED"), "{t}");
    }
}
