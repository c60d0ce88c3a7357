//! The process's own figures for `/metrics`, in the Prometheus client
//! libraries' conventions (`process_open_fds`, `process_max_fds`,
//! `process_resident_memory_bytes`, `process_cpu_seconds_total`,
//! `process_start_time_seconds`), read from /proc/self by the stats thread
//! at each scrape (never by the event loop); and the start-up check of the
//! descriptor limit against what the configuration may need.

use crate::config::Config;

/// What /proc/self says; `None` where it cannot be read (not Linux, or a
/// format this code does not know).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessStats {
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub resident_memory_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub start_time_seconds: Option<f64>,
}

/// Read the figures now. Costs a directory listing of /proc/self/fd (one
/// entry per open descriptor) and three small files.
pub fn read() -> ProcessStats {
    let ticks = clock_ticks();
    let page = page_size();
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    let stat = stat.as_deref().and_then(parse_stat);
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .as_deref()
        .and_then(parse_btime);
    let rss_pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .as_deref()
        .and_then(parse_statm_rss);
    ProcessStats {
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64),
        max_fds: nofile_limit().map(|(soft, _)| soft),
        resident_memory_bytes: rss_pages.zip(page).map(|(n, p)| n * p),
        cpu_seconds: stat
            .zip(ticks)
            .map(|(s, t)| (s.utime + s.stime) as f64 / t as f64),
        start_time_seconds: stat
            .zip(ticks)
            .zip(boot)
            .map(|((s, t), b)| b as f64 + s.starttime as f64 / t as f64),
    }
}

/// The fields of /proc/self/stat this uses, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub utime: u64,
    pub stime: u64,
    pub starttime: u64,
}

/// /proc/self/stat: `pid (comm) state ...`; comm may hold spaces and
/// parentheses, so fields are counted after the last `)`. utime and stime
/// are fields 14 and 15, starttime field 22 (1-based, proc(5)).
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // rest starts at field 3 (state).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
    })
}

/// /proc/stat's `btime` line: boot time, seconds since the epoch.
pub fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// /proc/self/statm: `size resident shared ...` in pages.
pub fn parse_statm_rss(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

fn clock_ticks() -> Option<u64> {
    // SAFETY: sysconf has no memory-safety preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (v > 0).then_some(v as u64)
}

fn page_size() -> Option<u64> {
    // SAFETY: as above.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (v > 0).then_some(v as u64)
}

/// RLIMIT_NOFILE as (soft, hard); `u64::MAX` for unlimited.
pub fn nofile_limit() -> Option<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return None;
    }
    // rlim_t is u64 on the Linux targets this builds for.
    #[allow(clippy::useless_conversion)]
    let v = |x: libc::rlim_t| {
        if x == libc::RLIM_INFINITY {
            u64::MAX
        } else {
            u64::from(x)
        }
    };
    Some((v(r.rlim_cur), v(r.rlim_max)))
}

/// Descriptors besides clients and backends: listeners, admin and stats
/// connections (up to 16 each), the poll and signal pipes, log output.
pub const FD_OVERHEAD: u64 = 64;

/// The descriptors the configuration may need at once: every client
/// allowed, every backend of every user's pool (shared and pinned extras),
/// relayed logins' backends, and `FD_OVERHEAD`. A user whose clients also
/// use `CLIENT_FOUND_ROWS` gets a second pool, not counted here.
pub fn fds_needed(config: &Config) -> u64 {
    let backends: usize = config
        .users
        .iter()
        .map(|u| u.connections + u.max_pinned_backends)
        .sum();
    let relayed = if config.relay_unlisted {
        config.max_unlisted_connections
    } else {
        0
    };
    (config.max_client_connections as u64)
        .saturating_add(backends as u64)
        .saturating_add(relayed as u64)
        .saturating_add(FD_OVERHEAD)
}

/// At start-up: raise the soft RLIMIT_NOFILE towards the hard limit when it
/// is below what the configuration needs (as mysqld does for
/// open_files_limit), and warn when even that is not enough: past the
/// limit, accepts pause and backend connects fail.
pub fn check_fd_limit(config: &Config) {
    let need = fds_needed(config);
    let Some((soft, hard)) = nofile_limit() else {
        return;
    };
    if soft >= need {
        return;
    }
    let target = need.min(hard);
    let mut now = soft;
    if target > soft {
        let r = libc::rlimit {
            rlim_cur: target as libc::rlim_t,
            rlim_max: hard as libc::rlim_t,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } == 0 {
            now = target;
            log::info!("raised the open files limit (RLIMIT_NOFILE) from {soft} to {target}");
        }
    }
    if now < need {
        log::warn!(
            "open files limit (RLIMIT_NOFILE) is {now} (hard limit {hard}), below the {need} \
             the configuration may need (max_client_connections {} + backends {} + {FD_OVERHEAD}); \
             past it, accepts pause and backend connections fail: raise it (ulimit -n, \
             LimitNOFILE= in a systemd unit) or lower max_client_connections",
            config.max_client_connections,
            need - config.max_client_connections as u64 - FD_OVERHEAD,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_the_command_name() {
        // A command name with spaces and parentheses.
        let text = "4242 (fun (nel) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 3 0 123456 1000000 500 18446744073709551615";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                utime: 250,
                stime: 75,
                starttime: 123456
            })
        );
        assert_eq!(parse_stat("4242 (x) S 1 2"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn btime_and_statm() {
        assert_eq!(
            parse_btime("cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_btime("cpu 1\n"), None);
        assert_eq!(parse_statm_rss("1000 250 100 1 0 300 0\n"), Some(250));
        assert_eq!(parse_statm_rss(""), None);
    }

    #[test]
    fn own_process_figures_are_plausible() {
        let p = read();
        let fds = p.open_fds.expect("open fds");
        assert!(fds >= 3, "{p:?}");
        assert!(p.max_fds.expect("max fds") >= fds, "{p:?}");
        assert!(p.resident_memory_bytes.expect("rss") > 1 << 20, "{p:?}");
        assert!(p.cpu_seconds.expect("cpu") >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = p.start_time_seconds.expect("start");
        assert!(start <= now + 1.0 && start > now - 86400.0 * 365.0, "{p:?}");
    }
}
