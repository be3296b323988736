//! This process's memory, as Linux reports it in `/proc/self/status`.

/// The value of `field` (`VmRSS`, `VmHWM`, ...) in MiB; 0 where unknown.
pub fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix(field).and_then(|rest| rest.strip_prefix(':')))
        .and_then(|value| value.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}
