//! The man pages `funnel(8)` and `funnel.conf(5)`, generated in roff from
//! the option table in `config.rs` (the one place the keys are documented)
//! and the command line's usage, so the pages cannot drift from
//! `funnel --help`. `funnel --man funnel.8` / `--man funnel.conf.5` print
//! them; `scripts/package.sh` puts them in the Debian package.

use crate::config::{self, OptionDefault};

/// Text made safe for roff: backslashes and hyphens escaped, and a line
/// that would start with a control character guarded.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for line in text.split('\n') {
        if !out.is_empty() {
            out.push('\n');
        }
        if line.starts_with('.') || line.starts_with('\'') {
            out.push_str("\\&");
        }
        for c in line.chars() {
            match c {
                '\\' => out.push_str("\\e"),
                '-' => out.push_str("\\-"),
                c => out.push(c),
            }
        }
    }
    out
}

fn header(name: &str, section: u8, title: &str) -> String {
    format!(
        ".TH {} {section} \"\" \"funnel {}\" \"{title}\"\n",
        name.to_uppercase(),
        env!("CARGO_PKG_VERSION")
    )
}

/// `funnel(8)`; `usage` is the command line's usage text (getopts').
pub fn funnel_8(usage: &str) -> String {
    let mut out = header("funnel", 8, "System Administration");
    out.push_str(".SH NAME\nfunnel \\- connection\\-multiplexing daemon for MySQL and MariaDB\n");
    out.push_str(".SH SYNOPSIS\n.nf\n");
    out.push_str(&esc(usage.trim_end()));
    out.push_str("\n.fi\n");
    out.push_str(&format!(
        ".SH DESCRIPTION\n{}\n",
        esc(
            "funnel accepts thousands of MySQL client connections, authenticates them \
itself with the users of its configuration file, queues their commands in a bounded \
backlog and runs them over a small set of connections to one mysqld, replaying each \
client's session state on whichever backend connection runs its next command and \
pinning a client to one connection while its state cannot be moved (a transaction, \
locks, temporary tables). The configuration file is described in funnel.conf(5)."
        )
    ));
    out.push_str(&format!(
        ".SH SIGNALS\n.TP\n.B SIGHUP\n{}\n.TP\n.BR SIGTERM \", \" SIGINT\n{}\n",
        esc(
            "Re-read the configuration file and apply what can change without a restart; \
a broken file is refused with a logged error and the running configuration stays."
        ),
        esc(
            "Stop accepting clients, let running and queued commands finish for up to \
shutdown_timeout_ms, close the remaining clients with ERR 1053 and exit 0."
        )
    ));
    out.push_str(&format!(
        ".SH SYSTEMD\n{}\n",
        esc(
            "Started by systemd with Type=notify, funnel sends READY=1 to $NOTIFY_SOCKET \
once its client listeners are bound and a backend connection has logged in to mysqld, \
RELOADING=1 and READY=1 around a SIGHUP reload, and STOPPING=1 when it begins to shut \
down. When stderr is the journal ($JOURNAL_STREAM), log lines carry a syslog priority \
prefix instead of a timestamp."
        )
    ));
    out.push_str(&format!(
        ".SH EXIT STATUS\n{}\n",
        esc(
            "0 after a clean shutdown; 1 when the server failed at run time; 2 for a bad \
command line or configuration (nothing was started)."
        )
    ));
    out.push_str(
        ".SH FILES\n.TP\n.I /etc/funnel/funnel.conf\nThe configuration (Debian package).\n",
    );
    out.push_str(".SH SEE ALSO\n.BR funnel.conf (5),\n.BR systemctl (1),\n.BR journalctl (1)\n");
    out
}

/// `funnel.conf(5)`, every key of the option table, section by section.
pub fn funnel_conf_5() -> String {
    let mut out = header("funnel.conf", 5, "File Formats");
    out.push_str(".SH NAME\nfunnel.conf \\- configuration of the funnel daemon\n");
    out.push_str(&format!(
        ".SH DESCRIPTION\n{}\n.PP\n{}\n",
        esc(
            "An INI file: [section] headers, key = value lines, comments starting with \
# or ;. Sizes take K, M and G suffixes; times are in milliseconds. A bad value is refused \
at start-up with the file, line and key (exit code 2), and by a reload (the running \
configuration stays)."
        ),
        esc(
            "Keys marked \"restart to change\" keep their running value across a reload \
(SIGHUP); all others take effect at the reload."
        )
    ));
    let mut current = None;
    for spec in config::option_table() {
        if current != Some(spec.section) {
            current = Some(spec.section);
            out.push_str(&format!(".SH SECTION {}\n", esc(&spec.section.to_string())));
        }
        let default = match spec.default {
            OptionDefault::Required => "required".to_string(),
            other => format!("default {}", other.render()),
        };
        let reload = if spec.reloadable {
            ""
        } else {
            "; restart to change"
        };
        out.push_str(&format!(
            ".TP\n\\fB{}\\fR ({}{reload})\n{}\n",
            esc(spec.name),
            esc(&default),
            esc(spec.help)
        ));
    }
    out.push_str(".SH FILES\n.TP\n.I /etc/funnel/funnel.conf\n.TP\n.I /usr/share/doc/funnel/funnel.conf.example\n");
    out.push_str(".SH SEE ALSO\n.BR funnel (8)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_page_has_every_key() {
        let page = funnel_conf_5();
        for spec in config::option_table() {
            assert!(
                page.contains(&format!(".TP\n\\fB{}\\fR (", esc(spec.name))),
                "{} missing",
                spec.name
            );
        }
        assert!(page.contains(".SH SECTION [user NAME]\n"));
        // No line may start with a control character by accident.
        for line in page.lines() {
            assert!(!line.starts_with('\''), "{line}");
        }
    }

    #[test]
    fn roff_escapes() {
        assert_eq!(esc("a-b\\c"), "a\\-b\\ec");
        assert_eq!(esc(".x\n'y"), "\\&.x\n\\&'y");
    }
}
