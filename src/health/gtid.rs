//! MariaDB GTID positions: `domain-server-seqno` triples, comma separated
//! (`@@gtid_binlog_pos`, `@@gtid_slave_pos`), at most one per domain.
//!
//! Within a replication domain sequence numbers only grow (the replicas
//! run `gtid_strict_mode`), so "has this server applied that write" is a
//! comparison of sequence numbers per domain; the server id is kept for
//! display only.
//!
//! Reference: <https://mariadb.com/kb/en/gtid/>.

use std::collections::BTreeMap;
use std::fmt;

/// A GTID position: for each replication domain, the last transaction's
/// server id and sequence number.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GtidPosition {
    /// domain id -> (server id, sequence number); ordered so that the
    /// text form is the same as MariaDB's.
    domains: BTreeMap<u32, (u32, u64)>,
}

impl GtidPosition {
    /// Parses MariaDB's text form (`0-1-100,1-2-5`; empty: no transaction
    /// yet). Spaces around the entries are allowed (MariaDB prints none,
    /// users type some); a domain listed twice is refused.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut domains = BTreeMap::new();
        let s = s.trim();
        if s.is_empty() {
            return Ok(GtidPosition { domains });
        }
        for entry in s.split(',') {
            let entry = entry.trim();
            let mut parts = entry.split('-');
            let (Some(domain), Some(server), Some(seq), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(format!(
                    "GTID {entry:?} is not domain-server-sequence in {s:?}"
                ));
            };
            let number = |text: &str, what: &str| -> Result<u64, String> {
                text.parse::<u64>()
                    .map_err(|_| format!("GTID {entry:?}: {what} {text:?} is not a number"))
            };
            let domain = u32::try_from(number(domain, "domain id")?)
                .map_err(|_| format!("GTID {entry:?}: domain id out of range"))?;
            let server = u32::try_from(number(server, "server id")?)
                .map_err(|_| format!("GTID {entry:?}: server id out of range"))?;
            let seq = number(seq, "sequence number")?;
            if domains.insert(domain, (server, seq)).is_some() {
                return Err(format!("GTID domain {domain} listed twice in {s:?}"));
            }
        }
        Ok(GtidPosition { domains })
    }

    /// True when this position has reached `other` in every domain of
    /// `other` (a domain this one lacks has not been reached). An empty
    /// `other` is covered by anything.
    pub fn covers(&self, other: &GtidPosition) -> bool {
        other.domains.iter().all(|(domain, &(_, seq))| {
            self.domains
                .get(domain)
                .is_some_and(|&(_, mine)| mine >= seq)
        })
    }

    /// True when no transaction is recorded.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }
}

/// MariaDB's own form (domains in increasing order), which `parse` reads
/// back and `MASTER_GTID_WAIT` accepts.
impl fmt::Display for GtidPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (domain, (server, seq))) in self.domains.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{domain}-{server}-{seq}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(s: &str) -> GtidPosition {
        GtidPosition::parse(s).unwrap()
    }

    #[test]
    fn parses_and_prints_multi_domain_positions_in_domain_order() {
        let p = pos("1-2-5, 0-1-100");
        assert_eq!(p.to_string(), "0-1-100,1-2-5");
        assert_eq!(pos(&p.to_string()), p);
        assert_eq!(
            pos("0-1-18446744073709551615").to_string(),
            "0-1-18446744073709551615"
        );
    }

    #[test]
    fn an_empty_position_is_empty_and_prints_empty() {
        for text in ["", "  "] {
            let p = pos(text);
            assert!(p.is_empty());
            assert_eq!(p.to_string(), "");
        }
        assert!(!pos("0-1-1").is_empty());
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        for text in [
            "0-1",
            "0-1-2-3",
            "a-1-2",
            "0-1-x",
            "0--2",
            "0-1-2,",
            ",0-1-2",
            "0-1-2,0-3-4",
            "4294967296-1-1",
            "0-4294967296-1",
            "0-1-18446744073709551616",
            "-1-1-1",
            "0-1-2;1-1-1",
            "NULL",
        ] {
            let err = GtidPosition::parse(text).expect_err(text);
            assert!(!err.is_empty(), "{text}");
        }
        assert!(GtidPosition::parse("0-1-2,0-3-4")
            .unwrap_err()
            .contains("listed twice"));
    }

    #[test]
    fn covers_compares_sequence_numbers_in_every_domain_of_the_other() {
        let replica = pos("0-1-100,1-2-5");
        assert!(replica.covers(&pos("0-1-100")));
        assert!(replica.covers(&pos("0-1-99,1-2-5")));
        // The server id does not order transactions within a domain.
        assert!(replica.covers(&pos("0-7-100")));
        assert!(!replica.covers(&pos("0-1-101")));
        assert!(!replica.covers(&pos("0-1-1,1-2-6")));
        // A domain the replica has never seen is not reached.
        assert!(!replica.covers(&pos("2-1-1")));
        assert!(replica.covers(&pos("")));
        assert!(pos("").covers(&pos("")));
        assert!(!pos("").covers(&pos("0-1-1")));
        // Extra domains of the replica's own do not matter.
        assert!(replica.covers(&pos("1-2-4")));
    }
}
