//! Spin's HTTP routing (SPIN.md §2): route syntax (exact, `/...` and `/*`
//! trailing wildcards, `:param` segments, `{ private = true }`), precedence
//! (routefinder's ordering, as Spin uses it), and the request headers Spin
//! adds: the seven `spin-*` headers plus one `spin-path-match-*` per `:param`.

use std::collections::BTreeMap;

use crate::manifest::{HttpTrigger, RouteConfig};

/// The prefix reserved for Spin's own endpoints.
pub const WELL_KNOWN_PREFIX: &str = "/.well-known/spin/";

/// What a route leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A component, by ID.
    Component(String),
    /// The static response of the `[[trigger.http]]` at this index.
    Static(usize),
}

#[derive(Debug, Clone)]
struct Entry {
    target: Target,
    based_route: String,
    raw_route: String,
}

/// The routing table of one application.
#[derive(Debug)]
pub struct Router {
    inner: routefinder::Router<Entry>,
}

/// A matched request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// The component or static response.
    pub target: Target,
    /// The route with the base and trailing-slash rules applied (`spin-matched-route`).
    pub based_route: String,
    /// The route as written (`spin-raw-component-route`).
    pub raw_route: String,
    /// `:name` captures, in route order.
    pub captures: Vec<(String, String)>,
    /// The trailing-wildcard part of the path (`spin-path-info`).
    pub path_info: String,
}

impl Router {
    /// Builds the table. Returns it with warnings to log: duplicate routes
    /// (the last one wins) and routes under the reserved well-known prefix.
    pub fn build(triggers: &[HttpTrigger]) -> Result<(Self, Vec<String>), String> {
        let mut warnings = Vec::new();
        // raw route -> entry; a later identical route replaces an earlier one.
        let mut by_raw: Vec<Entry> = Vec::new();
        for (index, t) in triggers.iter().enumerate() {
            let raw = match &t.route {
                RouteConfig::Route(r) => r.clone(),
                RouteConfig::Private(_) => continue,
            };
            let target = match t.component_id() {
                Some(id) => Target::Component(id.to_string()),
                None => Target::Static(index),
            };
            let entry = Entry {
                based_route: based(&raw),
                raw_route: raw.clone(),
                target,
            };
            if let Some(pos) = by_raw.iter().position(|e| e.raw_route == raw) {
                warnings.push(format!(
                    "Duplicate route: {} ({}) will never be used; {} handles it",
                    entry.based_route,
                    describe(&by_raw[pos].target),
                    describe(&entry.target)
                ));
                by_raw.remove(pos);
            }
            by_raw.push(entry);
        }
        let mut inner = routefinder::Router::new();
        for e in by_raw {
            if e.based_route.starts_with(WELL_KNOWN_PREFIX) {
                warnings.push(format!(
                    "Route {} of {} is under the reserved prefix {WELL_KNOWN_PREFIX} and will never be reached",
                    e.based_route,
                    describe(&e.target)
                ));
            }
            let spec = match e.based_route.strip_suffix("/...") {
                Some(prefix) => format!("{prefix}/*"),
                None => e.based_route.clone(),
            };
            inner.add(spec.as_str(), e.clone()).map_err(|err| {
                format!(
                    "Error parsing route {} associated with component {}: {err}",
                    e.based_route,
                    describe(&e.target)
                )
            })?;
        }
        Ok((Self { inner }, warnings))
    }

    /// The best match for a raw request path (no query, not decoded).
    pub fn route(&self, path: &str) -> Option<RouteMatch> {
        let m = self.inner.best_match(path)?;
        let entry = m.handler();
        let captures = m.captures();
        let params = captures
            .params()
            .iter()
            .map(|c| (c.name().to_string(), c.value().to_string()))
            .collect();
        // Spin keeps trailing slashes in the path info; routefinder drops them.
        let path_info = match captures.wildcard() {
            None => String::new(),
            Some(w) => match (w.is_empty(), path.ends_with('/')) {
                (true, false) => String::new(),
                (true, true) => "/".to_string(),
                (false, false) => format!("/{w}"),
                (false, true) => format!("/{w}/"),
            },
        };
        Some(RouteMatch {
            target: entry.target.clone(),
            based_route: entry.based_route.clone(),
            raw_route: entry.raw_route.clone(),
            captures: params,
            path_info,
        })
    }
}

fn describe(target: &Target) -> String {
    match target {
        Target::Component(id) => id.clone(),
        Target::Static(i) => format!("static response #{i}"),
    }
}

/// The base is always `/`: make the route absolute and strip one trailing `/`.
fn based(raw: &str) -> String {
    let abs = if raw.starts_with('/') {
        raw.to_string()
    } else {
        format!("/{raw}")
    };
    abs.strip_suffix('/').map(str::to_string).unwrap_or(abs)
}

impl RouteMatch {
    /// The match Spin makes up for a service-chained request: route `/...`
    /// with the whole path as path info.
    pub fn chained(component: &str, path: &str) -> Self {
        Self {
            target: Target::Component(component.to_string()),
            based_route: "/...".to_string(),
            raw_route: "/...".to_string(),
            captures: Vec::new(),
            path_info: path.to_string(),
        }
    }

    /// The headers Spin adds to the request the component sees.
    pub fn spin_headers(&self, full_url: &str, client_addr: &str) -> BTreeMap<String, String> {
        let mut h = BTreeMap::new();
        h.insert("spin-full-url".to_string(), full_url.to_string());
        h.insert("spin-path-info".to_string(), self.path_info.clone());
        h.insert("spin-matched-route".to_string(), self.based_route.clone());
        h.insert("spin-base-path".to_string(), "/".to_string());
        h.insert(
            "spin-raw-component-route".to_string(),
            self.raw_route.clone(),
        );
        let component_route = self
            .raw_route
            .strip_suffix("/...")
            .unwrap_or(&self.raw_route);
        h.insert(
            "spin-component-route".to_string(),
            component_route.to_string(),
        );
        h.insert("spin-client-addr".to_string(), client_addr.to_string());
        for (name, value) in &self.captures {
            let header = format!(
                "spin-path-match-{}",
                name.to_ascii_lowercase().replace('_', "-")
            );
            h.insert(header, value.clone());
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse;

    fn router(routes: &[(&str, &str)]) -> Router {
        let mut text = String::from("spin_manifest_version = 2\n[application]\nname = \"t\"\n");
        for (route, comp) in routes {
            text.push_str(&format!(
                "[[trigger.http]]\nroute = \"{route}\"\ncomponent = \"{comp}\"\n"
            ));
        }
        let mut comps: Vec<&str> = routes.iter().map(|(_, c)| *c).collect();
        comps.sort();
        comps.dedup();
        for c in comps {
            text.push_str(&format!("[component.{c}]\nsource = \"x.wasm\"\n"));
        }
        let m = parse(&text).unwrap();
        Router::build(&m.trigger.http).unwrap().0
    }

    fn hit(r: &Router, path: &str) -> Option<(String, RouteMatch)> {
        r.route(path).map(|m| match &m.target {
            Target::Component(c) => (c.clone(), m.clone()),
            Target::Static(_) => ("static".into(), m.clone()),
        })
    }

    #[test]
    fn precedence_matches_spin() {
        let r = router(&[
            ("/users/:id", "a"),
            ("/users/me", "b"),
            ("/api/...", "c"),
            ("/:x/foo", "d"),
            ("/exact", "e"),
        ]);
        let (c, m) = hit(&r, "/users/42").unwrap();
        assert_eq!(c, "a");
        assert_eq!(m.captures, vec![("id".to_string(), "42".to_string())]);
        assert_eq!(m.path_info, "");
        assert_eq!(hit(&r, "/users/me").unwrap().0, "b");
        assert_eq!(hit(&r, "/users/me/").unwrap().0, "b");
        let (c, m) = hit(&r, "/api/foo").unwrap();
        assert_eq!(c, "c");
        assert_eq!(m.path_info, "/foo");
        let (c, m) = hit(&r, "/zzz/foo").unwrap();
        assert_eq!(c, "d");
        assert_eq!(m.captures, vec![("x".to_string(), "zzz".to_string())]);
        let (c, m) = hit(&r, "/api").unwrap();
        assert_eq!(c, "c");
        assert_eq!(m.path_info, "");
        assert_eq!(hit(&r, "/exact").unwrap().0, "e");
        assert_eq!(hit(&r, "/exact/").unwrap().0, "e");
        assert!(hit(&r, "/exact/x").is_none());
        assert!(hit(&r, "/nope").is_none());
    }

    #[test]
    fn path_info_keeps_trailing_slashes() {
        let r = router(&[("/test/...", "a")]);
        let info = |p: &str| hit(&r, p).unwrap().1.path_info;
        assert_eq!(info("/test"), "");
        assert_eq!(info("/test/"), "/");
        assert_eq!(info("/test/hello"), "/hello");
        assert_eq!(info("/test/hello/"), "/hello/");
    }

    #[test]
    fn longest_wildcard_wins_and_exact_beats_wildcard() {
        let r = router(&[
            ("/...", "all"),
            ("/a/...", "a"),
            ("/a/b/...", "ab"),
            ("/a/b/c", "abc"),
        ]);
        assert_eq!(hit(&r, "/x").unwrap().0, "all");
        assert_eq!(hit(&r, "/a/x").unwrap().0, "a");
        assert_eq!(hit(&r, "/a/b/x").unwrap().0, "ab");
        assert_eq!(hit(&r, "/a/b/c").unwrap().0, "abc");
        assert_eq!(hit(&r, "/").unwrap().0, "all");
    }

    #[test]
    fn duplicate_routes_last_wins() {
        let r = router(&[("/same", "first"), ("/same", "second")]);
        assert_eq!(hit(&r, "/same").unwrap().0, "second");
    }

    #[test]
    fn headers_match_spins_observed_set() {
        let r = router(&[("/base/:path_segment/:path_end/...", "a")]);
        let m = r.route("/base/path/end/rest").unwrap();
        let h = m.spin_headers(
            "http://example.com/base/path/end/rest?key=value",
            "127.0.0.1:50152",
        );
        let expected: BTreeMap<String, String> = [
            ("spin-base-path", "/"),
            ("spin-client-addr", "127.0.0.1:50152"),
            ("spin-component-route", "/base/:path_segment/:path_end"),
            (
                "spin-full-url",
                "http://example.com/base/path/end/rest?key=value",
            ),
            ("spin-matched-route", "/base/:path_segment/:path_end/..."),
            ("spin-path-info", "/rest"),
            ("spin-path-match-path-end", "end"),
            ("spin-path-match-path-segment", "path"),
            (
                "spin-raw-component-route",
                "/base/:path_segment/:path_end/...",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(h, expected);
    }

    #[test]
    fn dots_separate_segments_but_params_capture_them() {
        let r = router(&[("/files/:name", "a")]);
        let (_, m) = hit(&r, "/files/a.txt").unwrap();
        assert_eq!(m.captures, vec![("name".to_string(), "a.txt".to_string())]);
    }
}
