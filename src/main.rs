//! The `funnel` daemon: command line, configuration, logging, then the
//! event loop in `funnel::server::run`.
//!
//! Exit codes: 0 success, 1 the server failed at run time, 2 bad command
//! line or configuration (nothing was bound or started).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use funnel::config::{self, Config};
use getopts::Options;
use log::LevelFilter;

const EXIT_RUNTIME: u8 = 1;
const EXIT_USAGE: u8 = 2;

fn options() -> Options {
    let mut opts = Options::new();
    opts.optopt(
        "c",
        "config",
        &format!(
            "configuration file (default: ./{})",
            config::DEFAULT_CONFIG_PATH
        ),
        "PATH",
    );
    opts.optflag(
        "",
        "check-config",
        "validate the configuration, print it with defaults filled in, and exit",
    );
    opts.optopt(
        "",
        "man",
        "print a man page in roff: funnel.8 or funnel.conf.5",
        "PAGE",
    );
    opts.optflag("h", "help", "print this help and the configuration keys");
    opts.optflag("V", "version", "print the version");
    opts
}

fn usage(opts: &Options) -> String {
    opts.usage("Usage: funnel [-c PATH] [--check-config]\n       funnel stats [--admin HOST:PORT] [--user NAME] [--password PW] [--interval SECS]")
}

fn main() -> ExitCode {
    let opts = options();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("stats") {
        // `funnel stats ...`: the top-like view over a running funnel's admin console.
        return ExitCode::from(funnel::admin::cli::main(&args[1..]));
    }
    let matches = match opts.parse(&args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("funnel: {e}\n\n{}", usage(&opts));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if !matches.free.is_empty() {
        eprintln!(
            "funnel: unexpected argument {:?}\n\n{}",
            matches.free[0],
            usage(&opts)
        );
        return ExitCode::from(EXIT_USAGE);
    }
    if matches.opt_present("help") {
        println!(
            "{}\nConfiguration keys (see funnel.conf.example for details):\n{}",
            usage(&opts),
            config::options_help()
        );
        return ExitCode::SUCCESS;
    }
    if let Some(page) = matches.opt_str("man") {
        match page.as_str() {
            "funnel.8" => print!("{}", funnel::man::funnel_8(&usage(&opts))),
            "funnel.conf.5" => print!("{}", funnel::man::funnel_conf_5()),
            other => {
                eprintln!("funnel: no man page {other:?} (funnel.8 or funnel.conf.5)");
                return ExitCode::from(EXIT_USAGE);
            }
        }
        return ExitCode::SUCCESS;
    }
    if matches.opt_present("version") {
        println!("funnel {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }

    let path = match config_path(matches.opt_str("config")) {
        Ok(path) => path,
        Err(message) => {
            eprintln!("funnel: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Everything is validated here, before anything binds a socket.
    let config = match Config::from_file(&path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("funnel: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // A socket directory that does not exist would fail only at bind time.
    if let Some(dir) = missing_socket_dir(&config) {
        eprintln!(
            "funnel: {}: [funnel] unix_socket: directory {} does not exist (create it, or change unix_socket; systemd's RuntimeDirectory= creates it only when the service starts)",
            path.display(),
            dir.display()
        );
        return ExitCode::from(EXIT_USAGE);
    }
    if matches.opt_present("check-config") {
        print!("{}", config.describe());
        println!("config OK");
        return ExitCode::SUCCESS;
    }

    init_logging(config.log_level);
    install_panic_hook();
    log::info!(
        "funnel {} starting with {}",
        env!("CARGO_PKG_VERSION"),
        path.display()
    );
    funnel::process::check_fd_limit(&config);
    // The admin console and stats port, wired to the engine once it exists.
    let admin: Option<funnel::server::AdminStarter> =
        (config.admin.is_some() || config.stats.is_some()).then(|| {
            let config = config.clone();
            Box::new(move |handle| funnel::admin::spawn(&config, handle))
                as funnel::server::AdminStarter
        });
    match funnel::server::run(config, admin) {
        Ok(()) => {
            log::info!("funnel stopped");
            ExitCode::SUCCESS
        }
        Err(message) => {
            log::error!("{message}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// The directory of `[funnel] unix_socket` when it is not an existing directory.
fn missing_socket_dir(config: &Config) -> Option<PathBuf> {
    let dir = config.unix_socket.as_deref()?.parent()?;
    (!dir.as_os_str().is_empty() && !dir.is_dir()).then(|| dir.to_path_buf())
}

/// `-c PATH`, or ./funnel.conf if it exists: a daemon silently running on
/// built-in defaults is never what was meant.
fn config_path(given: Option<String>) -> Result<PathBuf, String> {
    if let Some(path) = given {
        return Ok(PathBuf::from(path));
    }
    let default = Path::new(config::DEFAULT_CONFIG_PATH);
    if default.exists() {
        Ok(default.to_path_buf())
    } else {
        Err(format!(
            "no -c/--config given and ./{} does not exist (see funnel.conf.example)",
            config::DEFAULT_CONFIG_PATH
        ))
    }
}

/// Timestamped logs on stderr. RUST_LOG, when set, replaces log_level
/// entirely (including per-module filters).
///
/// When stderr is journald's stream (systemd sets `$JOURNAL_STREAM` to its
/// device and inode), lines carry no timestamp (the journal stamps each one)
/// and start with the syslog priority prefix `<N>` that journald turns into
/// the entry's priority, so `journalctl -p warning` works.
fn init_logging(level: LevelFilter) {
    let mut builder = env_logger::Builder::new();
    if stderr_is_journal() {
        builder.format(|buf, record| {
            let priority = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(
                buf,
                "<{priority}>{} {}: {}",
                record.level(),
                record.target(),
                record.args()
            )
        });
    } else {
        builder.format_timestamp_millis();
    }
    let from_env = std::env::var_os("RUST_LOG").is_some_and(|v| !v.is_empty());
    if from_env {
        builder.parse_env("RUST_LOG");
    } else {
        // Let everything through env_logger and gate with the global max
        // level, so a reload can change log_level with log::set_max_level.
        builder.filter_level(LevelFilter::Trace);
    }
    if builder.try_init().is_err() {
        // Only possible if something installed a logger first; keep it.
        return;
    }
    if !from_env {
        log::set_max_level(level);
    }
}

/// `$JOURNAL_STREAM` is `DEVICE:INODE` of the stream systemd connected to
/// stderr; only when stderr still is that stream (not redirected by a
/// wrapper) does journald read what the funnel writes there.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat writes only into the zeroed stat buffer it is given.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    st.st_dev as u64 == dev && st.st_ino as u64 == ino
}

/// A panic means a broken invariant somewhere in the event loop; carrying on
/// with one thread or one connection in an unknown state would leave a
/// half-working daemon, so log and abort (and let the supervisor restart).
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let backtrace = std::backtrace::Backtrace::force_capture();
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("<unnamed>");
        let message = format!("panic in thread '{name}': {info}; aborting\n{backtrace}");
        if log::log_enabled!(log::Level::Error) {
            log::error!("{message}");
            log::logger().flush();
        } else {
            let _ = writeln!(std::io::stderr(), "funnel: {message}");
        }
        std::process::abort();
    }));
}
