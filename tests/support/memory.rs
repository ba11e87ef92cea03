//! A process's memory as the kernel counts it.

/// The peak resident set size of process `pid` so far (`VmHWM` in
/// `/proc/<pid>/status`), in bytes.
pub fn peak_rss_bytes(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {path}"));
    kib * 1024
}
