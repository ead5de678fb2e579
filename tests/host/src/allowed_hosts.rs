//! Spin's `allowed_outbound_hosts` grammar and matching (SPIN.md §4).
//!
//! An entry is `<scheme>://<host>[:<port>]`: the scheme is `*` or a word;
//! the host is `*`, `*.suffix`, a name, an IP or CIDR, or `self`; the port is
//! `*`, a number, a range `a..b` (end exclusive), or omitted for schemes with
//! a well-known port. A URL is allowed when scheme, host and port all match.

use std::net::IpAddr;

/// The domain service-chaining hosts live under.
pub const SERVICE_CHAINING_SUFFIX: &str = ".spin.internal";

/// One parsed `allowed_outbound_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    original: String,
    scheme: SchemePattern,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SchemePattern {
    Any,
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    /// `*.example.com`, stored as `.example.com`.
    Subdomain(String),
    ToSelf,
    Exact(String),
    Cidr {
        net: IpAddr,
        prefix: u8,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    Any,
    Exact(u16),
    /// `start..end`, end exclusive.
    Range(u16, u16),
}

/// The default port Spin assumes for a scheme, if it knows one.
pub fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "redis" => Some(6379),
        "mqtt" => Some(1883),
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl AllowedHost {
    /// Parses one entry, with Spin's error for each way it can be wrong.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let original = entry.to_string();
        let url = entry.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(match url {
                "*" | ":" | "" | "?" => format!(
                    "{url:?} is not an allowed outbound host format.\nHosts must be in the form <scheme>://<host>[:<port>], with '*' wildcards allowed for each.\nIf you intended to allow all outbound networking, you can use '*://*:*' - this will obviate all network sandboxing."
                ),
                _ => format!("{url:?} does not contain a scheme (e.g., 'http://' or '*://')"),
            });
        };
        let (host, port_and_path) = rest.rsplit_once(':').unwrap_or((rest, ""));
        let port = match port_and_path.split_once('/') {
            Some((port, path)) => {
                if !path.is_empty() {
                    return Err(format!("{url:?} has a path but is not allowed to"));
                }
                port
            }
            None => port_and_path,
        };
        Ok(Self {
            scheme: parse_scheme(scheme)?,
            host: parse_host(host)?,
            port: parse_port(port, scheme)?,
            original,
        })
    }

    /// Whether this entry allows `scheme://host[:port]`.
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let scheme_ok = match &self.scheme {
            SchemePattern::Any => true,
            SchemePattern::Exact(s) => s == scheme,
        };
        scheme_ok && self.host_allows(host) && self.port_allows(scheme, port)
    }

    fn host_allows(&self, host: &str) -> bool {
        match &self.host {
            HostPattern::Any => true,
            HostPattern::Subdomain(suffix) => host.ends_with(suffix.as_str()),
            HostPattern::ToSelf => false,
            HostPattern::Exact(h) => h == host,
            HostPattern::Cidr { net, prefix } => {
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                match bare.parse::<IpAddr>() {
                    Ok(ip) => cidr_contains(*net, *prefix, ip),
                    Err(_) => false,
                }
            }
        }
    }

    fn port_allows(&self, scheme: &str, port: Option<u16>) -> bool {
        let port = match &self.port {
            PortPattern::Any => return true,
            _ => match port.or_else(|| well_known_port(scheme)) {
                Some(p) => p,
                None => return false,
            },
        };
        match &self.port {
            PortPattern::Any => true,
            PortPattern::Exact(p) => *p == port,
            PortPattern::Range(start, end) => (*start..*end).contains(&port),
        }
    }

    /// Whether this entry names the service-chaining host of `component`
    /// (or all of them, with `*.spin.internal` or `*`).
    pub fn allows_chaining_to(&self, component: &str) -> bool {
        self.allows(
            "http",
            &format!("{component}{SERVICE_CHAINING_SUFFIX}"),
            None,
        )
    }

    /// Whether this entry names a service-chaining host the way Spin's
    /// loader decides it (`crates/loader/src/local.rs`, `is_chaining_host`):
    /// a literal host ending in `.spin.internal`, or exactly
    /// `*.spin.internal`. `*` (any host) does not count, whatever the scheme.
    pub fn names_service_chaining(&self) -> bool {
        match &self.host {
            HostPattern::Exact(h) => h.ends_with(SERVICE_CHAINING_SUFFIX),
            HostPattern::Subdomain(suffix) => suffix == SERVICE_CHAINING_SUFFIX,
            _ => false,
        }
    }

    /// The entry as written in the manifest.
    pub fn as_str(&self) -> &str {
        &self.original
    }
}

fn parse_scheme(scheme: &str) -> Result<SchemePattern, String> {
    if scheme == "*" {
        return Ok(SchemePattern::Any);
    }
    if scheme.starts_with('{') {
        return Err("scheme lists are not yet supported".into());
    }
    if scheme.chars().any(|c| !c.is_alphabetic()) {
        return Err(format!(
            " scheme {scheme:?} contains non alphabetic character"
        ));
    }
    Ok(SchemePattern::Exact(scheme.to_string()))
}

fn parse_host(host: &str) -> Result<HostPattern, String> {
    let host = host.trim();
    if host == "*" {
        return Ok(HostPattern::Any);
    }
    if host == "self" || host == "self.alt" {
        return Ok(HostPattern::ToSelf);
    }
    if host.starts_with('{') {
        return Err("host lists are not yet supported".into());
    }
    if let Some(cidr) = parse_cidr(host) {
        return Ok(cidr);
    }
    if matches!(host.split('/').nth(1), Some(path) if !path.is_empty()) {
        return Err("hosts must not contain paths".into());
    }
    if let Some(domain) = host.strip_prefix("*.") {
        if domain.contains('*') {
            return Err(format!(
                "Invalid allowed host {host}: wildcards are allowed only as prefixes"
            ));
        }
        return Ok(HostPattern::Subdomain(format!(".{domain}")));
    }
    if host.contains('*') {
        return Err(format!(
            "Invalid allowed host {host}: wildcards are allowed only as subdomains"
        ));
    }
    Ok(HostPattern::Exact(host.trim_end_matches('/').to_string()))
}

fn parse_port(port: &str, scheme: &str) -> Result<PortPattern, String> {
    if port.is_empty() {
        return well_known_port(scheme).map(PortPattern::Exact).ok_or_else(|| {
            format!(
                "no port was provided and the scheme {scheme:?} does not have a known default port number"
            )
        });
    }
    if port == "*" {
        return Ok(PortPattern::Any);
    }
    if port.starts_with('{') {
        return Err("port lists are not yet supported".into());
    }
    if let Some((start, end)) = port.split_once("..") {
        let num = |s: &str| {
            s.parse::<u16>()
                .map_err(|_| format!("port range {port:?} contains non-number"))
        };
        return Ok(PortPattern::Range(num(start)?, num(end)?));
    }
    port.parse::<u16>()
        .map(PortPattern::Exact)
        .map_err(|_| format!("port {port:?} is not a number"))
}

/// An IP address (a /32 or /128) or a CIDR network; host bits are truncated.
fn parse_cidr(host: &str) -> Option<HostPattern> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let (addr, prefix) = match bare.split_once('/') {
        Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
        None => (bare, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(max);
    if prefix > max {
        return None;
    }
    Some(HostPattern::Cidr {
        net: mask(ip, prefix),
        prefix,
    })
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

fn cidr_contains(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => mask(ip, prefix) == net,
        _ => false,
    }
}

/// A component's whole allow-list.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    entries: Vec<AllowedHost>,
}

impl AllowedHosts {
    /// Parses every (already template-resolved) entry.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        if entries.len() == 1 && entries[0].as_ref() == "insecure:allow-all" {
            return Err("'insecure:allow-all' is not allowed - use '*://*:*' instead if you really want to allow all outbound traffic'".into());
        }
        let entries = entries
            .iter()
            .map(|e| AllowedHost::parse(e.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { entries })
    }

    /// Whether any entry allows `scheme://host[:port]`.
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        self.entries.iter().any(|e| e.allows(scheme, host, port))
    }

    /// Whether a URL is allowed. Like Spin, a string that does not parse as
    /// a URL with a host is retried with `{default_scheme}://` in front.
    pub fn allows_url(&self, url: &str, default_scheme: &str) -> bool {
        match OutboundUrl::parse(url, default_scheme) {
            Some(u) => self.allows(&u.scheme, &u.host, u.port),
            None => false,
        }
    }

    /// The entries.
    pub fn entries(&self) -> &[AllowedHost] {
        &self.entries
    }
}

/// The parts of an outbound URL the allow-list looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundUrl {
    /// Scheme, lowercase.
    pub scheme: String,
    /// Host as the URL parser gives it (IPv6 in brackets).
    pub host: String,
    /// Explicit port, if any.
    pub port: Option<u16>,
}

impl OutboundUrl {
    /// Parses `url`, retrying with `{default_scheme}://` prepended.
    pub fn parse(url: &str, default_scheme: &str) -> Option<Self> {
        let parsed = match url::Url::parse(url) {
            Ok(u) if u.has_host() => u,
            _ => url::Url::parse(&format!("{default_scheme}://{url}")).ok()?,
        };
        Some(Self {
            scheme: parsed.scheme().to_string(),
            host: parsed.host_str()?.to_string(),
            port: parsed.port(),
        })
    }

    /// `scheme://host[:port]`, as Spin prints a denied destination.
    pub fn origin(&self) -> String {
        match self.port {
            Some(p) => format!("{}://{}:{p}", self.scheme, self.host),
            None => format!("{}://{}", self.scheme, self.host),
        }
    }
}

/// The component ID a `*.spin.internal` host names, if it is one.
pub fn service_chaining_target(host: &str) -> Option<&str> {
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let (first, rest) = host.split_once('.')?;
    (rest == "spin.internal").then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(entry: &str, url: &str) -> bool {
        let hosts = AllowedHosts::parse(&[entry]).unwrap();
        hosts.allows_url(url, "https")
    }

    #[test]
    fn exact_hosts_use_the_scheme_default_port() {
        assert!(allows("https://example.com", "https://example.com/a"));
        assert!(allows("https://example.com", "https://example.com:443/a"));
        assert!(!allows("https://example.com", "https://example.com:8443/a"));
        assert!(!allows("https://example.com", "http://example.com/a"));
        assert!(allows("http://example.com", "http://example.com"));
        assert!(!allows("http://example.com", "http://other.com"));
    }

    #[test]
    fn ports_wildcards_and_ranges() {
        assert!(allows("http://localhost:*", "http://localhost:1234/"));
        assert!(allows(
            "http://localhost:8000..8002",
            "http://localhost:8001/"
        ));
        assert!(!allows(
            "http://localhost:8000..8002",
            "http://localhost:8002/"
        ));
        assert!(allows("*://localhost:9000", "http://localhost:9000/"));
        assert!(allows("*://*:*", "https://anything.example:1/"));
    }

    #[test]
    fn subdomain_wildcards_do_not_match_the_bare_domain() {
        assert!(allows("https://*.example.com", "https://api.example.com"));
        assert!(allows("https://*.example.com", "https://a.b.example.com"));
        assert!(!allows("https://*.example.com", "https://example.com"));
    }

    #[test]
    fn cidr_and_ip_hosts() {
        assert!(allows("http://10.0.0.0/8", "http://10.1.2.3/"));
        assert!(!allows("http://10.0.0.0/8", "http://11.1.2.3/"));
        assert!(allows("http://127.0.0.1:3000", "http://127.0.0.1:3000/x"));
        assert!(!allows("http://127.0.0.1:3000", "http://localhost:3000/x"));
    }

    #[test]
    fn postgres_addresses() {
        let hosts = AllowedHosts::parse(&["postgres://localhost:5432"]).unwrap();
        assert!(hosts.allows("postgres", "localhost", Some(5432)));
        assert!(hosts.allows("postgres", "localhost", None));
        let hosts = AllowedHosts::parse(&["postgres://localhost"]).unwrap();
        assert!(hosts.allows("postgres", "localhost", Some(5432)));
        assert!(!hosts.allows("postgres", "localhost", Some(5433)));
        let hosts = AllowedHosts::parse(&["*://localhost:*"]).unwrap();
        assert!(hosts.allows("postgres", "localhost", Some(5999)));
    }

    #[test]
    fn invalid_entries_are_refused() {
        for bad in [
            "example.com",
            "*",
            "",
            "http://example.com/path",
            "ftp://example.com",
            "h2c3://example.com:1",
            "http://exa*mple.com",
            "http://*.ex*ample.com",
            "http://example.com:abc",
            "{http,https}://example.com",
            "http://{a,b}",
            "http://example.com:{1,2}",
        ] {
            assert!(
                AllowedHost::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
        assert!(AllowedHosts::parse(&["insecure:allow-all"]).is_err());
        assert!(AllowedHost::parse("http://example.com/").is_ok());
        assert!(AllowedHost::parse("mqtt://broker").is_ok());
    }

    #[test]
    fn entries_that_name_service_chaining() {
        let names = |e: &str| AllowedHost::parse(e).unwrap().names_service_chaining();
        assert!(names("http://publish.spin.internal"));
        assert!(names("http://*.spin.internal"));
        assert!(names("https://publish.spin.internal"));
        assert!(names("*://*.spin.internal:*"));
        assert!(!names("*://*:*"));
        assert!(!names("http://spin.internal"));
        assert!(!names("http://example.com"));
        assert!(!names("postgres://127.0.0.1:5432"));
    }

    #[test]
    fn service_chaining() {
        let hosts = AllowedHosts::parse(&["http://publish.spin.internal"]).unwrap();
        assert!(hosts.entries()[0].allows_chaining_to("publish"));
        assert!(!hosts.entries()[0].allows_chaining_to("status"));
        let all = AllowedHosts::parse(&["http://*.spin.internal"]).unwrap();
        assert!(all.entries()[0].allows_chaining_to("status"));
        assert_eq!(
            service_chaining_target("publish.spin.internal"),
            Some("publish")
        );
        assert_eq!(
            service_chaining_target("publish.spin.internal:80"),
            Some("publish")
        );
        assert_eq!(service_chaining_target("a.b.spin.internal"), None);
        assert_eq!(service_chaining_target("example.com"), None);
    }

    #[test]
    fn self_is_never_a_host_match() {
        assert!(!allows("http://self", "http://self/"));
    }
}
