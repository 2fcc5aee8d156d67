//! CPU time and memory of processes, read from `/proc`: processes are found by executable name
//! (or by pid, for the generator itself), their `utime + stime` taken at the start and the end of
//! a phase, and their resident memory sampled every [`SAMPLE_EVERY`] for the peak.
//!
//! A process that starts during the phase counts from zero (a new PostgreSQL backend); one that
//! ends counts up to its last sample. A group's peak RSS is the peak of the sum over its
//! processes (PostgreSQL's shared buffers are counted in every backend that touched them).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often resident memory is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// `utime` and `stime` are in clock ticks of `USER_HZ`, which Linux fixes at 100 for user space
/// on every architecture this runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// Which processes make up a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Select {
    /// Every process whose executable (or, if unreadable, `comm`) has this name.
    Name(String),
    /// One process.
    Pid(u32),
}

/// A named set of processes, and whether its CPU counts in the total per saga.
#[derive(Debug, Clone)]
pub struct Group {
    pub label: String,
    pub select: Select,
    pub in_total: bool,
}

impl Group {
    pub fn named(label: &str, exe: &str, in_total: bool) -> Group {
        Group { label: label.to_owned(), select: Select::Name(exe.to_owned()), in_total }
    }
}

/// What a group used during a phase.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub label: String,
    pub in_total: bool,
    /// Most processes of the group seen at once (0: none found).
    pub processes: usize,
    pub cpu_s: f64,
    pub peak_rss_bytes: u64,
}

/// `(comm, utime + stime)` from the text of `/proc/<pid>/stat`. `comm` may hold spaces and
/// parentheses: the fields after it are found from its last `)`.
pub fn parse_stat(text: &str) -> Option<(String, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    // After ") ": state is field 3; utime and stime are fields 14 and 15.
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// Resident memory in bytes from the text of `/proc/<pid>/status` (`VmRSS:  1234 kB`).
pub fn parse_vm_rss(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// The name a process is known by: its executable's file name, else its `comm`.
fn process_name(pid: u32, comm: &str) -> String {
    match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(path) => path
            .file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(" (deleted)").to_owned())
            .unwrap_or_else(|| comm.to_owned()),
        Err(_) => comm.to_owned(),
    }
}

/// One process of a group, as seen in one scan.
struct Seen {
    pid: u32,
    group: usize,
    ticks: u64,
}

fn scan(groups: &[Group]) -> Vec<Seen> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut seen = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Some((comm, ticks)) =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|t| parse_stat(&t))
        else {
            continue;
        };
        let mut name = None;
        for (group, g) in groups.iter().enumerate() {
            let hit = match &g.select {
                Select::Pid(p) => *p == pid,
                Select::Name(n) => name.get_or_insert_with(|| process_name(pid, &comm)) == n,
            };
            if hit {
                seen.push(Seen { pid, group, ticks });
                break;
            }
        }
    }
    seen
}

fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|t| parse_vm_rss(&t)).unwrap_or(0)
}

/// A background sampler over a phase.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<Vec<Usage>>,
}

impl Sampler {
    /// Take the starting CPU times now, then sample memory until [`Sampler::finish`].
    pub fn start(groups: Vec<Group>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = tokio::task::spawn_blocking(move || sample_until(&groups, &flag));
        Sampler { stop, handle }
    }

    /// Take the ending CPU times; what each group used.
    pub async fn finish(self) -> Vec<Usage> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.unwrap_or_default()
    }
}

/// Per process: ticks at the start (0 if it started later) and at the last scan.
struct Track {
    group: usize,
    first: u64,
    last: u64,
}

fn sample_until(groups: &[Group], stop: &AtomicBool) -> Vec<Usage> {
    let mut tracks: HashMap<u32, Track> = HashMap::new();
    let mut usage: Vec<Usage> = groups
        .iter()
        .map(|g| Usage { label: g.label.clone(), in_total: g.in_total, processes: 0, cpu_s: 0.0, peak_rss_bytes: 0 })
        .collect();
    let mut first_scan = true;
    loop {
        let done = stop.load(Ordering::Relaxed);
        let seen = scan(groups);
        let mut rss_sum = vec![0u64; groups.len()];
        let mut count = vec![0usize; groups.len()];
        for s in &seen {
            let t = tracks.entry(s.pid).or_insert(Track {
                group: s.group,
                first: if first_scan { s.ticks } else { 0 },
                last: 0,
            });
            t.last = s.ticks;
            rss_sum[s.group] += rss(s.pid);
            count[s.group] += 1;
        }
        for (u, (r, c)) in usage.iter_mut().zip(rss_sum.into_iter().zip(count)) {
            u.peak_rss_bytes = u.peak_rss_bytes.max(r);
            u.processes = u.processes.max(c);
        }
        first_scan = false;
        if done {
            break;
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    for t in tracks.values() {
        if let Some(u) = usage.get_mut(t.group) {
            u.cpu_s += t.last.saturating_sub(t.first) as f64 / TICKS_PER_SECOND;
        }
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_spaces_and_parentheses_in_the_name() {
        let line = "4242 (tokio (worker) 1) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 100 \
                    123456789 2048 18446744073709551615";
        assert_eq!(parse_stat(line), Some(("tokio (worker) 1".to_owned(), 325)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tpostgres\nVmPeak:\t  220000 kB\nVmRSS:\t   10240 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(status), Some(10 * 1024 * 1024));
        assert_eq!(parse_vm_rss("Name:\tkthreadd\n"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn this_process_is_found_by_pid_and_uses_some_cpu() {
        let me = Group { label: "me".into(), select: Select::Pid(std::process::id()), in_total: true };
        let sampler = Sampler::start(vec![me, Group::named("nothing", "no-such-executable-here", true)]);
        let mut x = 0u64;
        let until = std::time::Instant::now() + Duration::from_millis(300);
        while std::time::Instant::now() < until {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let usage = sampler.finish().await;
        assert_eq!(usage[0].processes, 1);
        assert!(usage[0].cpu_s > 0.0 && usage[0].peak_rss_bytes > 0, "{usage:?}");
        assert_eq!((usage[1].processes, usage[1].cpu_s, usage[1].peak_rss_bytes), (0, 0.0, 0));
    }
}
