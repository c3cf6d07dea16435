//! The server process as Linux's `/proc/PID` shows it: resident memory,
//! CPU time and open files.

use std::time::Duration;

use anyhow::Context;

/// The kernel's clock ticks per second in `/proc/PID/stat` (`USER_HZ`, 100
/// on every architecture Linux exposes it for).
const TICKS_PER_SECOND: u64 = 100;

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

/// The CPU time (user and system) process `pid` has used so far.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = parse_cpu_ticks(&stat).with_context(|| format!("{path} has no CPU times"))?;
    Ok(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

/// `utime + stime` of a `/proc/PID/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    // Field 3 (state) comes first; utime and stime are fields 14 and 15.
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// How many files (connections included) process `pid` holds open.
pub fn open_files(pid: u32) -> anyhow::Result<usize> {
    let path = format!("/proc/{pid}/fd");
    Ok(std::fs::read_dir(&path)
        .with_context(|| format!("listing {path}"))?
        .count())
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
    fn cpu_ticks_are_counted_after_the_command_name() {
        let stat = "4242 (my (odd) server) S 1 4242 4242 0 -1 4194560 1200 0 3 0 250 75 0 0 20 0 9 0 100 1000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1 2"), None);
        assert_eq!(parse_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn reads_our_own_process() {
        let memory = read(std::process::id()).expect("own status");
        assert!(memory.rss_kib > 0);
        assert!((mib(2048) - 2.0).abs() < f64::EPSILON);
        let file = std::fs::File::open("/proc/self/stat").expect("open a file");
        let with_file = open_files(std::process::id()).expect("own open files");
        drop(file);
        assert!(open_files(std::process::id()).expect("own open files") < with_file);
        // Busy work must show up as CPU time (however loaded the machine).
        let (before, deadline) = (
            cpu_time(std::process::id()).expect("own CPU time"),
            std::time::Instant::now() + Duration::from_secs(10),
        );
        while cpu_time(std::process::id()).expect("own CPU time")
            < before + Duration::from_millis(30)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "CPU time did not grow"
            );
        }
    }
}
