//! Spin's host requirements, checked at start-up the way Spin checks them
//! (SPIN.md §0). Spin's loader gives a component the requirement
//! `local_service_chaining` when one of its raw `allowed_outbound_hosts`
//! entries names a `*.spin.internal` host (`crates/loader/src/local.rs`,
//! `requires_service_chaining`); each trigger then refuses to start when a
//! component it serves has a requirement it does not support
//! (`LockedApp::ensure_needs_only`, called from `crates/trigger/src/cli.rs`).
//! Only the HTTP trigger supports `local_service_chaining`; the cron plugin
//! (built on spin-trigger 3.5) supports none. One refusing trigger stops the
//! whole app, so this host refuses it before serving anything.

use std::collections::{BTreeMap, BTreeSet};

use crate::allowed_hosts::AllowedHost;
use crate::error::HostError;
use crate::manifest::{ComponentDef, Manifest};

/// The requirement of a component that may call `*.spin.internal`.
pub const LOCAL_SERVICE_CHAINING: &str = "local_service_chaining";

/// What `spin up` prints after a trigger refused the app (the refusing
/// trigger's own error comes first).
pub const TRIGGER_EXITED: &str = "A trigger exited unexpectedly. Terminating.";

/// The requirements a trigger type supports, as Spin 4.0.2 and the cron
/// plugin 0.3.0 declare them (`supported_host_requirements`).
pub fn supported_by(trigger_type: &str) -> &'static [&'static str] {
    match trigger_type {
        "http" => &[LOCAL_SERVICE_CHAINING],
        _ => &[],
    }
}

/// A component's host requirements, from its manifest entry.
///
/// Like Spin, this looks at the raw entries (before `{{ var }}` templates
/// are resolved) and skips an entry it cannot parse: a templated host such
/// as `"{{ base_url }}"` never makes a component a chaining one, whatever
/// the variable holds.
pub fn component_requirements(component: &ComponentDef) -> BTreeSet<&'static str> {
    let converted = component.allowed_http_hosts.iter().map(|h| {
        // The deprecated form's bare hosts are http(s) hosts; Spin converts
        // them first (`normalized_allowed_outbound_hosts`).
        if h.contains("://") || h == "insecure:allow-all" {
            h.clone()
        } else {
            format!("http://{h}")
        }
    });
    let chaining = component
        .allowed_outbound_hosts
        .iter()
        .cloned()
        .chain(converted)
        .any(|entry| AllowedHost::parse(&entry).is_ok_and(|h| h.names_service_chaining()));
    let mut out = BTreeSet::new();
    if chaining {
        out.insert(LOCAL_SERVICE_CHAINING);
    }
    out
}

/// Checks every trigger against the components it serves, in the order
/// Spin starts them (HTTP first, then the cron plugin), and returns the
/// first trigger's refusal with Spin's own message.
pub fn check(manifest: &Manifest) -> Result<(), HostError> {
    let mut served: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for t in &manifest.trigger.http {
        if let Some(id) = t.component_id() {
            served.entry("http").or_default().insert(id);
        }
    }
    for t in &manifest.trigger.cron {
        served
            .entry("cron")
            .or_default()
            .insert(t.component.as_str());
    }
    for trigger_type in ["http", "cron"] {
        let supported = supported_by(trigger_type);
        let mut unmet = BTreeSet::new();
        for id in served.get(trigger_type).into_iter().flatten() {
            if let Some(def) = manifest.component.get(*id) {
                unmet.extend(
                    component_requirements(def)
                        .into_iter()
                        .filter(|r| !supported.contains(r)),
                );
            }
        }
        if !unmet.is_empty() {
            return Err(HostError::UnsupportedHostRequirements {
                trigger: trigger_type.to_string(),
                requirements: unmet.into_iter().map(str::to_string).collect(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse;

    const SPIN_MESSAGE: &str = "This application requires the following features that are not available in this version of the 'cron' trigger: local_service_chaining";

    fn manifest(allowed: &str, cron: bool) -> Manifest {
        let cron = if cron {
            "[[trigger.cron]]\ncomponent = \"a\"\ncron_expression = \"0 * * * * *\"\n"
        } else {
            ""
        };
        parse(&format!(
            r#"
spin_manifest_version = 2
[application]
name = "t"
[variables]
base = {{ default = "http://b.spin.internal" }}
[[trigger.http]]
route = "/a"
component = "a"
{cron}
[[trigger.http]]
route = {{ private = true }}
component = "b"
[component.a]
source = "a.wasm"
allowed_outbound_hosts = [{allowed}]
[component.b]
source = "b.wasm"
"#
        ))
        .unwrap()
    }

    #[test]
    fn a_cron_component_that_chains_is_refused_with_spins_message() {
        for allowed in [
            r#""http://x.spin.internal""#,
            r#""http://*.spin.internal""#,
            r#""postgres://db:5432", "https://b.spin.internal""#,
        ] {
            let e = check(&manifest(allowed, true)).unwrap_err();
            assert_eq!(e.to_string(), SPIN_MESSAGE, "{allowed}");
        }
    }

    #[test]
    fn the_same_component_on_http_alone_may_chain() {
        check(&manifest(r#""http://b.spin.internal""#, false)).unwrap();
        check(&manifest(r#""http://*.spin.internal""#, false)).unwrap();
    }

    #[test]
    fn a_cron_component_without_chaining_hosts_passes() {
        check(&manifest(r#""*://*:*", "https://example.com""#, true)).unwrap();
        check(&manifest("", true)).unwrap();
    }

    #[test]
    fn templated_entries_are_judged_raw_as_spin_does() {
        // Spin's loader parses the raw string; `{{ base }}` has no scheme,
        // so it never counts, even though it resolves to a chaining host.
        check(&manifest(r#""{{ base }}""#, true)).unwrap();
    }

    #[test]
    fn deprecated_allowed_http_hosts_count_too() {
        let m = manifest("", true);
        let mut m = m;
        if let Some(a) = m.component.get_mut("a") {
            a.allowed_http_hosts = vec!["b.spin.internal".into()];
        }
        assert_eq!(check(&m).unwrap_err().to_string(), SPIN_MESSAGE);
    }
}
