//! What a running process costs, from `/proc`: its resident memory and the CPU time it used, for benches that
//! report a server's memory or its CPU time per request.

/// The resident set size of `pid` in KiB (0 when it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}

/// Clock ticks per second of `/proc/PID/stat`'s times (`getconf CLK_TCK`: 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// The CPU time (user + system) `pid` used so far, in seconds (0 when it cannot be read). On shared cores the
/// difference over a round, divided by the requests served, moves far less than requests per second.
pub fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces, inside parentheses): utime and stime are the
    // 14th and 15th of the line.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse::<u64>().ok()).sum();
    ticks as f64 / TICKS_PER_SEC
}

/// Pins every thread of `pid` to `cpus` (a `taskset` list such as `0` or `0-1`); false when it could not.
/// Threads started later inherit the mask of the thread that starts them.
pub fn pin(pid: u32, cpus: &str) -> bool {
    std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
