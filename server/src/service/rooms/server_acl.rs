//! Server access control lists: whether a room's `m.room.server_acl`
//! lets a server take part ([spec], "Server Access Control Lists").
//!
//! Pure: the caller hands in the ACL event's content (from the room's
//! current state) and the server's name. Events and EDUs of a room from a
//! denied server are dropped, the read endpoints refuse it, and nothing is
//! sent to it.
//!
//! The rules, in order:
//! 1. the name is matched without its port;
//! 2. with `allow_ip_literals: false`, an IPv4 or `[IPv6]` literal is denied;
//! 3. a name matching any `deny` glob is denied;
//! 4. a name matching any `allow` glob is allowed; anything else is denied
//!    (so an ACL without `allow` denies every server).
//!
//! Globs take `*` (any run of characters) and `?` (one character) and are
//! matched case-insensitively, as Synapse does. Entries that are not
//! strings are ignored, and so is an `allow` or `deny` that is not a list
//! (it counts as empty), rather than failing the whole check.
//!
//! [spec]: https://spec.matrix.org/v1.16/client-server-api/#server-access-control-lists-acls-for-rooms

use std::net::{Ipv4Addr, Ipv6Addr};

use ruma::ServerName;
use serde_json::Value;

/// Whether the ACL `content` lets `server` take part in the room.
pub fn is_server_allowed(content: &Value, server: &ServerName) -> bool {
    let host = host_without_port(server.as_str()).to_ascii_lowercase();
    let allow_ip_literals = content
        .get("allow_ip_literals")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    if !allow_ip_literals && is_ip_literal(&host) {
        return false;
    }
    let matches_any = |field: &str| {
        content
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|glob| glob_matches(&glob.to_ascii_lowercase(), &host))
    };
    if matches_any("deny") {
        return false;
    }
    matches_any("allow")
}

/// `name` without a trailing `:port` (an `[IPv6]` literal keeps its brackets).
fn host_without_port(name: &str) -> &str {
    if let Some(end) = name.rfind(']') {
        return &name[..=end];
    }
    name.rsplit_once(':').map_or(name, |(host, _)| host)
}

fn is_ip_literal(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().is_ok();
    }
    host.parse::<Ipv4Addr>().is_ok()
}

/// Whether `glob` (`*`, `?`) matches all of `text`: the classic two-pointer
/// match that backtracks to the last `*`, linear in practice and at worst
/// `glob.len() * text.len()`.
fn glob_matches(glob: &str, text: &str) -> bool {
    let glob: Vec<char> = glob.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut g, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match glob.get(g) {
            Some('*') => {
                star = Some((g, t));
                g += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                g += 1;
                t += 1;
            }
            _ => match star {
                // Let the last `*` take one more character.
                Some((star_g, star_t)) => {
                    g = star_g + 1;
                    t = star_t + 1;
                    star = Some((star_g, star_t + 1));
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use ruma::server_name;
    use serde_json::json;

    use super::*;

    #[test]
    fn allow_and_deny_globs_decide_in_order() {
        let acl = json!({ "allow": ["*"], "deny": ["evil.example", "*.evil.example"] });
        assert!(is_server_allowed(&acl, server_name!("good.example")));
        assert!(!is_server_allowed(&acl, server_name!("evil.example")));
        assert!(!is_server_allowed(&acl, server_name!("sub.evil.example")));
        // Deny wins over allow.
        let acl = json!({ "allow": ["evil.example"], "deny": ["evil.example"] });
        assert!(!is_server_allowed(&acl, server_name!("evil.example")));
    }

    #[test]
    fn servers_not_allowed_are_denied() {
        let acl = json!({ "allow": ["*.trusted.example"] });
        assert!(is_server_allowed(&acl, server_name!("a.trusted.example")));
        assert!(!is_server_allowed(&acl, server_name!("trusted.example")));
        assert!(!is_server_allowed(&json!({}), server_name!("a.example")));
        assert!(!is_server_allowed(
            &json!({ "deny": [] }),
            server_name!("a.example")
        ));
    }

    #[test]
    fn the_port_is_ignored_and_case_does_not_matter() {
        let acl = json!({ "allow": ["Matrix.Example"] });
        assert!(is_server_allowed(&acl, server_name!("matrix.example:8448")));
        assert!(is_server_allowed(&acl, server_name!("MATRIX.example")));
        let acl = json!({ "allow": ["*"], "deny": ["localhost"] });
        assert!(!is_server_allowed(&acl, server_name!("localhost:8448")));
    }

    #[test]
    fn question_marks_match_one_character() {
        let acl = json!({ "allow": ["server?.example"] });
        assert!(is_server_allowed(&acl, server_name!("server1.example")));
        assert!(!is_server_allowed(&acl, server_name!("server.example")));
        assert!(!is_server_allowed(&acl, server_name!("server12.example")));
    }

    #[test]
    fn ip_literals_are_denied_only_when_asked() {
        let allowed = json!({ "allow": ["*"] });
        let denied = json!({ "allow": ["*"], "allow_ip_literals": false });
        for literal in [server_name!("1.2.3.4"), server_name!("1.2.3.4:8448")] {
            assert!(is_server_allowed(&allowed, literal));
            assert!(!is_server_allowed(&denied, literal));
        }
        assert!(!is_server_allowed(&denied, server_name!("[::1]:8448")));
        assert!(!is_server_allowed(&denied, server_name!("[2001:db8::1]")));
        assert!(is_server_allowed(&denied, server_name!("1.2.3.4.example")));
    }

    #[test]
    fn malformed_entries_are_ignored() {
        let acl = json!({ "allow": ["*", 3, null], "deny": "evil.example" });
        // `deny` is not a list: it denies nothing.
        assert!(is_server_allowed(&acl, server_name!("evil.example")));
        let acl = json!({ "allow": "*" });
        assert!(!is_server_allowed(&acl, server_name!("a.example")));
        let acl = json!({ "allow": ["*"], "allow_ip_literals": "no" });
        assert!(is_server_allowed(&acl, server_name!("1.2.3.4")));
    }

    #[test]
    fn globs_backtrack() {
        assert!(glob_matches("*a*b", "xxaxxb"));
        assert!(glob_matches("a*b*c", "abbbc"));
        assert!(!glob_matches("a*b*c", "abbb"));
        assert!(glob_matches("**", ""));
        assert!(!glob_matches("?", ""));
    }
}
