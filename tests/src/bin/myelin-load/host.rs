//! How busy the measuring machine is: other work on the same cores skews
//! every figure, so each scenario records the load average.

/// The 1-minute load average from `/proc/loadavg` (Linux), if readable.
pub fn load_average_1m() -> Option<f64> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// Logical CPUs available to this process.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_first_field() {
        assert_eq!(parse_loadavg("2.86 2.68 2.02 3/412 17330\n"), Some(2.86));
        assert_eq!(parse_loadavg(""), None);
        assert_eq!(parse_loadavg("busy"), None);
    }
}
