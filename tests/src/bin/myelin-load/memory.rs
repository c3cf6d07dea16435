//! The server's memory, read from `/proc/PID/status` (Linux).

use anyhow::Context;

/// Resident memory of one process, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident set size now.
    pub rss_kib: u64,
    /// `VmHWM`: the peak resident set size so far (when the kernel reports it).
    pub peak_kib: Option<u64>,
}

/// Reads the memory of process `pid`.
pub fn read(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {path} (is the server pid right?)"))?;
    parse_status(&status).with_context(|| format!("{path} has no VmRSS line"))
}

/// Parses the `VmRSS` and `VmHWM` lines of a `/proc/PID/status` text.
fn parse_status(status: &str) -> Option<Memory> {
    let field = |name: &str| {
        status.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            let mut parts = rest.split_whitespace();
            let value: u64 = parts.next()?.parse().ok()?;
            (parts.next() == Some("kB")).then_some(value)
        })
    };
    Some(Memory {
        rss_kib: field("VmRSS")?,
        peak_kib: field("VmHWM"),
    })
}

/// KiB to MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rss_and_peak() {
        let status = "Name:\tpython\nVmPeak:\t  300000 kB\nVmHWM:\t  160000 kB\nVmRSS:\t  156672 kB\nThreads:\t12\n";
        assert_eq!(
            parse_status(status),
            Some(Memory {
                rss_kib: 156_672,
                peak_kib: Some(160_000)
            })
        );
    }

    #[test]
    fn missing_or_odd_rss_is_none() {
        assert_eq!(parse_status("Name:\tx\n"), None);
        assert_eq!(parse_status("VmRSS:\tlots kB\n"), None);
        assert_eq!(parse_status("VmRSS:\t12 pages\n"), None);
        // A kernel thread has no Vm* lines; VmRSSX must not match VmRSS.
        assert_eq!(parse_status("VmRSSX:\t12 kB\n"), None);
    }

    #[test]
    fn reads_our_own_process() {
        let memory = read(std::process::id()).expect("own status");
        assert!(memory.rss_kib > 0);
        assert!((mib(2048) - 2.0).abs() < f64::EPSILON);
    }
}
