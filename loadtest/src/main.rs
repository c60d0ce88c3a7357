//! loadtest: a fleet of simulated web-server clients against one MySQL
//! endpoint (the funnel, or mysqld directly), or two of them compared.
//! See README.md.

mod config;
mod engine;
mod fake_mysqld;
#[cfg(test)]
mod fakeserver;
mod plot;
mod prepare;
mod proto;
mod schedule;
mod stats;

use std::process::ExitCode;
use std::time::Duration;

use getopts::{Matches, Options};
use serde_json::json;

use config::{
    fmt_num, parse_ms, parse_secs, ConnMode, Credentials, Mix, QueryKind, Target, ThinkDist,
    Workload,
};
use stats::RunResult;

struct Cli {
    targets: Vec<Target>,
    labels: Vec<String>,
    creds: Credentials,
    work: Workload,
    table_size_given: bool,
    rounds: usize,
    pause: Duration,
    json: Option<String>,
    plot: Option<String>,
    prepare: bool,
    cleanup: bool,
    batch: u64,
    fail_on_error: bool,
    verbose: bool,
}

fn options() -> Options {
    let mut o = Options::new();
    o.optopt(
        "t",
        "target",
        "host:port or /unix/socket (default 127.0.0.1:3306)",
        "ADDR",
    );
    o.optopt("u", "user", "user name (default root)", "USER");
    o.optopt(
        "p",
        "password",
        "password (default: $MYSQL_PWD or empty)",
        "PW",
    );
    o.optopt("D", "database", "database to log in to", "DB");
    o.optopt("c", "clients", "simulated clients (default 100)", "N");
    o.optopt("d", "duration", "measured seconds (default 10)", "S");
    o.optopt(
        "",
        "warmup",
        "seconds after the ramp-up, not measured (default 2)",
        "S",
    );
    o.optopt(
        "",
        "mix",
        "query mix weights (default point=90,range=5,sleep=0,write=5)",
        "SPEC",
    );
    o.optopt(
        "",
        "sleep-ms",
        "length of SELECT SLEEP() queries (default 100)",
        "MS",
    );
    o.optopt(
        "",
        "think-ms",
        "mean think time before each query, and between pages (default 0; open loop: only inside pages)",
        "MS",
    );
    o.optopt(
        "",
        "think-dist",
        "think time distribution: uniform (default, 0.5x..1.5x), exp, fixed",
        "D",
    );
    o.optopt(
        "",
        "mode",
        "persistent (default) or page (connect, K queries, COM_QUIT)",
        "MODE",
    );
    o.optopt(
        "",
        "page-queries",
        "queries per page in page mode (default 5)",
        "K",
    );
    o.optopt(
        "",
        "rate",
        "open loop: total queries/s over all clients (default: closed loop)",
        "R",
    );
    o.optopt("", "table", "table name (default sbtest1)", "NAME");
    o.optopt(
        "",
        "table-size",
        "rows (default: MAX(id) of the table, or 10000)",
        "N",
    );
    o.optopt(
        "",
        "max-connecting",
        "connects in flight at most (default 32; keep it under the server's listen backlog)",
        "M",
    );
    o.optopt(
        "",
        "connect-timeout-ms",
        "connect + login timeout (default 10000)",
        "MS",
    );
    o.optopt(
        "",
        "query-timeout-ms",
        "query timeout, 0 = none (default 60000)",
        "MS",
    );
    o.optopt(
        "",
        "reconnect-ms",
        "first reconnect delay after an error (default 100, doubles to 5 s)",
        "MS",
    );
    o.optopt(
        "",
        "drain-s",
        "wait this long for queries in flight at the end (default 10)",
        "S",
    );
    o.optopt(
        "",
        "ramp-timeout-s",
        "longest ramp-up before warmup starts anyway (default 120)",
        "S",
    );
    o.optopt("", "seed", "random seed (default 1)", "N");
    o.optopt(
        "",
        "charset",
        "collation id for the handshake, e.g. 45 = utf8mb4_general_ci (default: the server's)",
        "ID",
    );
    o.optflag(
        "",
        "deprecate-eof",
        "negotiate CLIENT_DEPRECATE_EOF (libmysqlclient 8 style; PHP does not)",
    );
    o.optflag(
        "",
        "compare",
        "compare two targets given as arguments: --compare ADDR_A ADDR_B",
    );
    o.optopt(
        "",
        "rounds",
        "compare: rounds per target, alternating A B / B A (default 3)",
        "R",
    );
    o.optopt(
        "",
        "pause-s",
        "compare: pause between runs (default 1)",
        "S",
    );
    o.optopt("", "label-a", "name of target A (default A)", "NAME");
    o.optopt("", "label-b", "name of target B (default B)", "NAME");
    o.optopt(
        "",
        "json",
        "write the results as JSON to FILE (- for stdout)",
        "FILE",
    );
    o.optopt(
        "",
        "plot",
        "write latency percentile curves to FILE.svg",
        "FILE",
    );
    o.optflag(
        "",
        "prepare",
        "create and fill the table on --target, then exit",
    );
    o.optflag("", "cleanup", "drop the table on --target, then exit");
    o.optopt("", "batch", "prepare: rows per INSERT (default 1000)", "N");
    o.optflag("", "fail-on-error", "exit 1 if any error happened");
    o.optflag("", "progress", "print a line per second on stderr");
    o.optflag(
        "v",
        "verbose",
        "compare: also print each target's full summary",
    );
    o.optopt(
        "",
        "fake-server",
        "serve a minimal fake mysqld on ADDR (any login; SELECT: one row; others: OK) until killed",
        "ADDR",
    );
    o.optopt(
        "",
        "fake-threads",
        "fake server: event loops (default 1)",
        "N",
    );
    o.optflag("h", "help", "this help");
    o
}

/// `--fake-server ADDR`: serves until SIGINT or SIGTERM, then exits 0.
fn run_fake_server(m: &Matches) -> Result<ExitCode, String> {
    let addr = m.opt_str("fake-server").unwrap_or_default();
    let addr: std::net::SocketAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("--fake-server: {addr:?} is not an IP:port address"))?;
    let threads = num(m, "fake-threads", 1usize)?;
    if threads == 0 || threads > 256 {
        return Err("--fake-threads must be between 1 and 256".into());
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("signal handler: {e}"))?;
    }
    // As many connections as allowed (the hard limit, if lower).
    let _ = raise_nofile(65536);
    let listeners =
        fake_mysqld::bind(addr, threads).map_err(|e| format!("--fake-server {addr}: {e}"))?;
    eprintln!(
        "fake server ({}) on {addr}, {threads} thread(s)",
        fake_mysqld::SERVER_VERSION
    );
    fake_mysqld::serve(listeners, stop).map_err(|e| format!("fake server on {addr}: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

fn num<T: std::str::FromStr>(m: &Matches, name: &str, default: T) -> Result<T, String> {
    match m.opt_str(name) {
        Some(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("--{name}: {s:?} is not a valid number")),
        None => Ok(default),
    }
}

fn dur(
    m: &Matches,
    name: &str,
    default: Duration,
    f: fn(&str, &str) -> Result<Duration, String>,
) -> Result<Duration, String> {
    match m.opt_str(name) {
        Some(s) => f(&s, &format!("--{name}")),
        None => Ok(default),
    }
}

fn parse_cli(m: &Matches) -> Result<Cli, String> {
    let d = Workload::default();
    let compare = m.opt_present("compare");
    let targets = if compare {
        if m.free.len() != 2 {
            return Err("--compare takes two addresses: --compare ADDR_A ADDR_B".into());
        }
        if m.opt_present("target") {
            return Err("--compare and --target are exclusive".into());
        }
        vec![Target::parse(&m.free[0])?, Target::parse(&m.free[1])?]
    } else {
        if !m.free.is_empty() {
            return Err(format!("unexpected argument {:?}", m.free[0]));
        }
        let t = m
            .opt_str("target")
            .unwrap_or_else(|| "127.0.0.1:3306".into());
        vec![Target::parse(&t)?]
    };
    let labels = vec![
        m.opt_str("label-a").unwrap_or_else(|| "A".into()),
        m.opt_str("label-b").unwrap_or_else(|| "B".into()),
    ];
    let creds = Credentials {
        user: m.opt_str("user").unwrap_or_else(|| "root".into()),
        password: m
            .opt_str("password")
            .or_else(|| std::env::var("MYSQL_PWD").ok())
            .unwrap_or_default(),
        database: m.opt_str("database"),
    };
    let mode = match m.opt_str("mode").as_deref() {
        None | Some("persistent") => ConnMode::Persistent,
        Some("page") => ConnMode::Page {
            queries: num(m, "page-queries", 5u32)?.max(1),
        },
        Some(x) => return Err(format!("--mode: {x:?} is not persistent or page")),
    };
    if m.opt_present("page-queries") && mode == ConnMode::Persistent {
        return Err("--page-queries needs --mode page".into());
    }
    let rate = match m.opt_str("rate") {
        None => None,
        Some(s) => match s.trim().parse::<f64>() {
            Ok(r) if r > 0.0 && r.is_finite() => Some(r),
            _ => return Err(format!("--rate: {s:?} is not a positive number")),
        },
    };
    let work = Workload {
        clients: num(m, "clients", d.clients)?,
        duration: dur(m, "duration", d.duration, parse_secs)?,
        warmup: dur(m, "warmup", d.warmup, parse_secs)?,
        mix: match m.opt_str("mix") {
            Some(s) => Mix::parse(&s).map_err(|e| format!("--mix: {e}"))?,
            None => d.mix,
        },
        sleep: dur(m, "sleep-ms", d.sleep, parse_ms)?,
        think: dur(m, "think-ms", d.think, parse_ms)?,
        think_dist: match m.opt_str("think-dist") {
            Some(s) => ThinkDist::parse(&s).map_err(|e| format!("--think-dist: {e}"))?,
            None => d.think_dist,
        },
        mode,
        rate,
        table: m.opt_str("table").unwrap_or(d.table),
        table_size: num(m, "table-size", d.table_size)?,
        max_connecting: num(m, "max-connecting", d.max_connecting)?.max(1),
        connect_timeout: dur(m, "connect-timeout-ms", d.connect_timeout, parse_ms)?,
        query_timeout: dur(m, "query-timeout-ms", d.query_timeout, parse_ms)?,
        drain_timeout: dur(m, "drain-s", d.drain_timeout, parse_secs)?,
        reconnect_delay: dur(m, "reconnect-ms", d.reconnect_delay, parse_ms)?
            .max(Duration::from_millis(1)),
        ramp_timeout: dur(m, "ramp-timeout-s", d.ramp_timeout, parse_secs)?,
        seed: num(m, "seed", d.seed)?,
        deprecate_eof: m.opt_present("deprecate-eof"),
        charset: match m.opt_str("charset") {
            None => None,
            Some(s) => Some(
                s.trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|c| *c > 0)
                    .ok_or_else(|| format!("--charset: {s:?} is not a collation id (1-255)"))?,
            ),
        },
        progress: m.opt_present("progress"),
    };
    if work.clients == 0 || work.clients > 1_000_000 {
        return Err("--clients must be between 1 and 1000000".into());
    }
    if work.duration.is_zero() {
        return Err("--duration must be positive".into());
    }
    if work.table.is_empty()
        || !work
            .table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        return Err("--table: letters, digits, '_' and '.' only".into());
    }
    let prepare = m.opt_present("prepare");
    let cleanup = m.opt_present("cleanup");
    if (prepare || cleanup) && compare {
        return Err("--prepare/--cleanup work on --target only".into());
    }
    Ok(Cli {
        targets,
        labels,
        creds,
        table_size_given: m.opt_present("table-size"),
        work,
        rounds: num(m, "rounds", 3usize)?.max(1),
        pause: dur(m, "pause-s", Duration::from_secs(1), parse_secs)?,
        json: m.opt_str("json"),
        plot: m.opt_str("plot"),
        prepare,
        cleanup,
        batch: num(m, "batch", 1000u64)?,
        fail_on_error: m.opt_present("fail-on-error"),
        verbose: m.opt_present("verbose"),
    })
}

/// Raises the soft (and if need be the hard) open files limit to `want`.
/// Returns the limit in force.
fn raise_nofile(want: u64) -> Result<u64, String> {
    // SAFETY: plain syscalls on a struct we own.
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
    }
    if rl.rlim_cur >= want {
        return Ok(rl.rlim_cur);
    }
    let new = libc::rlimit {
        rlim_cur: want,
        rlim_max: rl.rlim_max.max(want),
    };
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
        return Ok(want);
    }
    // Not allowed to raise the hard limit: take what there is.
    let capped = libc::rlimit {
        rlim_cur: rl.rlim_max,
        rlim_max: rl.rlim_max,
    };
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) } == 0 {
        Err(format!(
            "open files limit is {} (hard), {want} wanted",
            rl.rlim_max
        ))
    } else {
        Err(format!(
            "setrlimit: {}; open files limit stays {}",
            std::io::Error::last_os_error(),
            rl.rlim_cur
        ))
    }
}

/// Checks the target once before the run; fills in the table size. An
/// unreachable target is only a warning (the run will count the errors);
/// a missing table is fatal unless the mix only sleeps.
fn check_target(cli: &mut Cli, idx: usize) -> Result<(), String> {
    let t = &cli.targets[idx];
    let needs_table = QueryKind::ALL
        .iter()
        .any(|k| *k != QueryKind::Sleep && cli.work.mix.weight(*k) > 0);
    match prepare::preflight(t, &cli.creds, &cli.work.table, cli.work.connect_timeout) {
        Err(e) => {
            eprintln!("warning: preflight against {t} failed: {e}");
            Ok(())
        }
        Ok(p) => {
            eprintln!("target {t}: {}", p.server_version);
            match (p.max_id, p.table_error) {
                (_, Some(e)) if needs_table => Err(format!(
                    "table {} on {t}: {e} (run with --prepare first)",
                    cli.work.table
                )),
                (Some(max), _) if !cli.table_size_given && idx == 0 => {
                    cli.work.table_size = max;
                    Ok(())
                }
                (None, None) if needs_table => Err(format!(
                    "table {} on {t} is empty (run with --prepare first)",
                    cli.work.table
                )),
                _ => Ok(()),
            }
        }
    }
}

fn run_once(cli: &Cli, idx: usize, seed: u64) -> Result<RunResult, String> {
    let label = if cli.targets.len() > 1 {
        cli.labels[idx].clone()
    } else {
        "run".to_owned()
    };
    engine::run(&cli.work, &cli.targets[idx], &cli.creds, &label, seed)
        .map_err(|e| format!("event loop: {e}"))
}

fn brief(r: &RunResult) -> String {
    let p = |q| stats::fmt_ms(r.all.value_at_percentile(q));
    format!(
        "{:.0} q/s, p50 {} p99 {} ms, errors {}",
        r.qps(),
        p(50.0),
        p(99.0),
        r.errors.total()
    )
}

fn real_main() -> Result<ExitCode, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = options();
    let m = opts.parse(&args).map_err(|e| e.to_string())?;
    if m.opt_present("help") {
        print!(
            "{}",
            opts.usage(
                "Usage: loadtest [options] --target ADDR\n       \
                 loadtest [options] --compare ADDR_A ADDR_B\n       \
                 loadtest --prepare --target ADDR [--table-size N]\n       \
                 loadtest --fake-server IP:PORT [--fake-threads N]"
            )
        );
        return Ok(ExitCode::SUCCESS);
    }
    if m.opt_present("fake-server") {
        return run_fake_server(&m);
    }
    if m.opt_present("fake-threads") {
        return Err("--fake-threads needs --fake-server".into());
    }
    let mut cli = parse_cli(&m)?;

    if cli.prepare || cli.cleanup {
        if cli.cleanup {
            prepare::cleanup(&cli.targets[0], &cli.creds, &cli.work.table)?;
        }
        if cli.prepare {
            prepare::prepare(
                &cli.targets[0],
                &cli.creds,
                &cli.work.table,
                cli.work.table_size,
                cli.batch,
                cli.work.seed,
            )?;
        }
        return Ok(ExitCode::SUCCESS);
    }

    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal kills the process as usual.
        let _ = signal_hook::flag::register_conditional_default(sig, engine::stop_flag().clone());
        let _ = signal_hook::flag::register(sig, engine::stop_flag().clone());
    }
    let want = cli.work.clients as u64 + 256;
    if let Err(e) = raise_nofile(want) {
        eprintln!(
            "warning: {e}: connects beyond it will fail (EMFILE) and count as connect errors"
        );
    }
    for i in 0..cli.targets.len() {
        check_target(&mut cli, i)?;
    }
    if cli.work.rate.is_some() && !cli.work.think.is_zero() && cli.work.mode == ConnMode::Persistent
    {
        eprintln!("note: --think-ms is ignored in open loop (--rate sets the schedule)");
    }
    if let Some(r) = cli.work.rate {
        let interval = cli.work.clients as f64 / r;
        if interval > cli.work.duration.as_secs_f64() {
            eprintln!(
                "note: each client sends every {} s, longer than the run: use fewer clients or a higher rate",
                fmt_num(interval)
            );
        }
    }

    let results: Vec<RunResult> = if cli.targets.len() == 1 {
        eprintln!(
            "running: {} against {}",
            cli.work.describe(),
            cli.targets[0]
        );
        vec![run_once(&cli, 0, cli.work.seed)?]
    } else {
        let mut acc = [
            RunResult::new(&cli.labels[0], &cli.targets[0].to_string()),
            RunResult::new(&cli.labels[1], &cli.targets[1].to_string()),
        ];
        eprintln!(
            "comparing A {} ({}) and B {} ({}): {} rounds of {}",
            cli.labels[0],
            cli.targets[0],
            cli.labels[1],
            cli.targets[1],
            cli.rounds,
            cli.work.describe()
        );
        let mut first = true;
        for round in 0..cli.rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for idx in order {
                if !first {
                    std::thread::sleep(cli.pause);
                }
                first = false;
                // Same seed for both targets in a round: same queries.
                let r = run_once(&cli, idx, cli.work.seed.wrapping_add(round as u64))?;
                eprintln!(
                    "  round {}/{} {}: {}",
                    round + 1,
                    cli.rounds,
                    cli.labels[idx],
                    brief(&r)
                );
                acc[idx].merge(&r);
                if engine::stopped() {
                    break;
                }
            }
            if engine::stopped() {
                eprintln!("interrupted: reporting the rounds done so far");
                break;
            }
        }
        acc.into()
    };

    let mut text = String::new();
    if results.len() == 1 {
        text += &stats::summary(&results[0], &cli.work);
    } else {
        if cli.verbose {
            for r in &results {
                text += &stats::summary(r, &cli.work);
                text.push('\n');
            }
        }
        text += &stats::comparison(&results[0], &results[1], &cli.work);
    }
    // With --json - stdout carries the JSON alone.
    if cli.json.as_deref() == Some("-") {
        eprint!("{text}");
    } else {
        print!("{text}");
    }

    if let Some(path) = &cli.json {
        let mut v = json!({
            "workload": {
                "description": cli.work.describe(),
                "clients": cli.work.clients,
                "duration_s": cli.work.duration.as_secs_f64(),
                "warmup_s": cli.work.warmup.as_secs_f64(),
                "mix": cli.work.mix.to_string(),
                "mode": match cli.work.mode {
                    ConnMode::Persistent => "persistent".to_owned(),
                    ConnMode::Page { .. } => "page".to_owned(),
                },
                "page_queries": match cli.work.mode {
                    ConnMode::Page { queries } => json!(queries),
                    ConnMode::Persistent => json!(null),
                },
                "rate": cli.work.rate,
                "think_ms": cli.work.think.as_secs_f64() * 1e3,
                "think_dist": cli.work.think_dist.name(),
                "sleep_ms": cli.work.sleep.as_secs_f64() * 1e3,
                "table": cli.work.table,
                "table_size": cli.work.table_size,
                "seed": cli.work.seed,
                "rounds": if results.len() > 1 { cli.rounds } else { 1 },
            },
            "results": results.iter().map(|r| r.to_json(&cli.work)).collect::<Vec<_>>(),
        });
        if results.len() == 2 {
            v["ratios_b_over_a"] = stats::ratios_json(&results[0], &results[1]);
        }
        let text = serde_json::to_string_pretty(&v).map_err(|e| e.to_string())? + "\n";
        if path == "-" {
            print!("{text}");
        } else {
            std::fs::write(path, text).map_err(|e| format!("--json {path}: {e}"))?;
            eprintln!("wrote {path}");
        }
    }

    if let Some(path) = &cli.plot {
        let curves: Vec<plot::Curve<'_>> = results
            .iter()
            .map(|r| plot::Curve {
                name: format!("{} {} ({:.0} q/s)", r.label, r.target, r.qps()),
                hist: &r.all,
            })
            .collect();
        let title = format!("query latency: {}", cli.work.describe());
        match plot::plot(path, &title, &curves) {
            Ok(()) => eprintln!("wrote {path}"),
            Err(e) => eprintln!("warning: {e}"),
        }
    }

    let errors: u64 = results.iter().map(RunResult::all_errors).sum();
    if cli.fail_on_error && errors > 0 {
        eprintln!("{errors} errors (--fail-on-error)");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadtest: {e}");
            ExitCode::from(2)
        }
    }
}
