//! Funnel configurations for tests, built section by section.
//!
//! ```ignore
//! let f = common::FunnelConfig::new()      // users funnel_a and funnel_b
//!     .pool("connections = 1")
//!     .admin(admin_port, "adm")
//!     .start();                            // on a free port
//! ```
//!
//! The backend is the binary's shared MariaDB unless [`FunnelConfig::backend_port`]
//! names another (an owned server, a fake); the shared server is only
//! started when the text is built. Lines are written as given, in the
//! order given, into their section; the sections come in the order
//! `[funnel]`, `[backend]`, `[pool]`, the users, `[admin]`, `[stats]`,
//! then whatever [`FunnelConfig::section`] added.

use super::{FunnelBuilder, FunnelProcess, PASS_A, PASS_B, USER_A, USER_B};

#[derive(Clone, Default)]
pub struct FunnelConfig {
    backend_port: Option<u16>,
    /// `[server NAME]` sections (name, port, lines): instead of `[backend]
    /// address` when any is given.
    servers: Vec<(String, u16, Vec<String>)>,
    funnel: Vec<String>,
    backend: Vec<String>,
    pool: Vec<String>,
    /// `[user]` sections, whole.
    users: Vec<String>,
    /// `[admin]`: port, then its lines.
    admin: Option<(u16, Vec<String>)>,
    /// `[stats]`: port, then its lines.
    stats: Option<(u16, Vec<String>)>,
    sections: Vec<String>,
    rust_log: Option<String>,
}

impl FunnelConfig {
    /// Users funnel_a and funnel_b with the harness passwords.
    pub fn new() -> FunnelConfig {
        FunnelConfig::empty()
            .user(USER_A, PASS_A, &[])
            .user(USER_B, PASS_B, &[])
    }

    /// User funnel_a only.
    pub fn user_a() -> FunnelConfig {
        FunnelConfig::empty().user(USER_A, PASS_A, &[])
    }

    /// No users yet (add them with [`user`](Self::user)).
    pub fn empty() -> FunnelConfig {
        FunnelConfig::default()
    }

    /// mysqld on 127.0.0.1:`port` instead of the shared server.
    pub fn backend_port(mut self, port: u16) -> FunnelConfig {
        self.backend_port = Some(port);
        self
    }

    /// A `[server NAME]` on 127.0.0.1:`port` with `lines` (role, weight,
    /// ...); with any, `[backend]` has no address.
    pub fn server(mut self, name: &str, port: u16, lines: &[&str]) -> FunnelConfig {
        let lines = lines.iter().map(|l| l.to_string()).collect();
        self.servers.push((name.into(), port, lines));
        self
    }

    /// A line (or several) in `[funnel]`.
    pub fn funnel(mut self, line: &str) -> FunnelConfig {
        self.funnel.push(line.into());
        self
    }

    /// A line (or several) in `[backend]`, after its address.
    pub fn backend(mut self, line: &str) -> FunnelConfig {
        self.backend.push(line.into());
        self
    }

    /// A line (or several) in `[pool]`.
    pub fn pool(mut self, line: &str) -> FunnelConfig {
        self.pool.push(line.into());
        self
    }

    /// A `[user NAME]` section with this password and `extra` lines.
    pub fn user(mut self, name: &str, pw: &str, extra: &[&str]) -> FunnelConfig {
        let mut s = format!("[user \"{name}\"]\npassword = \"{pw}\"\n");
        for l in extra {
            s.push_str(l);
            s.push('\n');
        }
        self.users.push(s);
        self
    }

    /// An `[admin]` console on 127.0.0.1:`port` with this password, written
    /// unquoted as `password = PW` (user `admin` unless an
    /// [`admin_line`](Self::admin_line) says otherwise).
    pub fn admin(mut self, port: u16, password: &str) -> FunnelConfig {
        self.admin = Some((port, vec![format!("password = {password}")]));
        self
    }

    /// A line in `[admin]` (after [`admin`](Self::admin)).
    pub fn admin_line(mut self, line: &str) -> FunnelConfig {
        let (_, lines) = self.admin.as_mut().expect("admin_line needs admin()");
        lines.push(line.into());
        self
    }

    /// The `[stats]` port on 127.0.0.1:`port`.
    pub fn stats(mut self, port: u16) -> FunnelConfig {
        self.stats = Some((port, Vec::new()));
        self
    }

    /// A line in `[stats]` (after [`stats`](Self::stats)).
    pub fn stats_line(mut self, line: &str) -> FunnelConfig {
        let (_, lines) = self.stats.as_mut().expect("stats_line needs stats()");
        lines.push(line.into());
        self
    }

    /// A whole section (header included), written last.
    pub fn section(mut self, text: &str) -> FunnelConfig {
        self.sections.push(text.into());
        self
    }

    /// RUST_LOG for the funnel (default: $RUST_LOG, else "debug").
    pub fn rust_log(mut self, filter: &str) -> FunnelConfig {
        self.rust_log = Some(filter.into());
        self
    }

    /// The config text, listening on 127.0.0.1:`port`.
    pub fn text(&self, port: u16) -> String {
        let backend_port = self.backend_port.unwrap_or_else(|| super::mariadb().port);
        let mut s = format!("[funnel]\nlisten = 127.0.0.1:{port}\n");
        push_lines(&mut s, &self.funnel);
        if self.servers.is_empty() {
            s.push_str(&format!(
                "\n[backend]\naddress = 127.0.0.1:{backend_port}\n"
            ));
        } else {
            s.push_str("\n[backend]\n");
        }
        push_lines(&mut s, &self.backend);
        for (name, port, lines) in &self.servers {
            s.push_str(&format!("\n[server {name}]\naddress = 127.0.0.1:{port}\n"));
            push_lines(&mut s, lines);
        }
        s.push_str("\n[pool]\n");
        push_lines(&mut s, &self.pool);
        for u in &self.users {
            s.push('\n');
            s.push_str(u);
        }
        for (name, part) in [("admin", &self.admin), ("stats", &self.stats)] {
            if let Some((port, lines)) = part {
                s.push_str(&format!("\n[{name}]\nlisten = 127.0.0.1:{port}\n"));
                push_lines(&mut s, lines);
            }
        }
        for section in &self.sections {
            s.push_str(&format!("\n{section}\n"));
        }
        s
    }

    /// A builder for the funnel on a free port (for more options: args,
    /// env, limits, [`FunnelBuilder::try_start`]).
    pub fn builder(&self) -> FunnelBuilder {
        let port = super::free_port();
        let b = FunnelProcess::builder(&self.text(port)).port(port);
        match &self.rust_log {
            Some(f) => b.rust_log(f),
            None => b,
        }
    }

    /// Starts the funnel on a free port and waits until it listens.
    pub fn start(&self) -> FunnelProcess {
        self.builder().start()
    }
}

fn push_lines(s: &mut String, lines: &[String]) {
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
}
