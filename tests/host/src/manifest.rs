//! Parsing `spin.toml` (manifest version 2) the way Spin does (SPIN.md §5,
//! §7): unknown keys are refused where Spin refuses them, IDs and variable
//! names follow Spin's rules, and every `{{ var }}` template must name a
//! declared application variable. Features Outpost's components do not use
//! (key-value stores, SQLite, files, ...) are refused with a clear message
//! rather than silently ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::HostError;

/// A parsed manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Must be 2.
    pub spin_manifest_version: u32,
    /// `[application]`.
    pub application: Application,
    /// `[variables]`: application variables.
    #[serde(default)]
    pub variables: BTreeMap<String, VariableDef>,
    /// `[[trigger.<type>]]` entries.
    #[serde(default)]
    pub trigger: Triggers,
    /// `[component.<id>]`.
    #[serde(default)]
    pub component: BTreeMap<String, ComponentDef>,
}

/// `[application]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    /// Application name (required).
    pub name: String,
    /// Version.
    pub version: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Authors.
    #[serde(default)]
    pub authors: Vec<String>,
    /// Deployment targets.
    pub targets: Option<Vec<String>>,
    /// `[application.trigger.<type>]` settings.
    pub trigger: Option<toml::Table>,
    /// `[application.tool.*]`.
    pub tool: Option<toml::Table>,
}

/// One application variable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariableDef {
    /// Default value.
    pub default: Option<String>,
    /// Whether a provider must give a value.
    #[serde(default)]
    pub required: bool,
    /// Secret (only carried along; it does not change resolution).
    #[serde(default)]
    pub secret: bool,
    /// Description.
    pub description: Option<String>,
}

/// All triggers.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Triggers {
    /// `[[trigger.http]]`.
    #[serde(default)]
    pub http: Vec<HttpTrigger>,
    /// `[[trigger.cron]]`.
    #[serde(default)]
    pub cron: Vec<CronTrigger>,
    /// Any other trigger type (refused: this host has no such trigger).
    #[serde(flatten)]
    pub other: BTreeMap<String, toml::Value>,
}

/// `[[trigger.http]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTrigger {
    /// Optional trigger ID.
    pub id: Option<String>,
    /// The route (or `{ private = true }`).
    pub route: RouteConfig,
    /// The component it runs.
    pub component: Option<ComponentRef>,
    /// A static response instead of a component.
    pub static_response: Option<StaticResponse>,
    /// `{ type = "http" | "wagi", ... }`.
    pub executor: Option<toml::Table>,
}

/// A route string or `{ private = true }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RouteConfig {
    /// A routable pattern.
    Route(String),
    /// Reachable only by service chaining.
    Private(PrivateRoute),
}

/// `route = { private = true }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateRoute {
    /// Must be true.
    pub private: bool,
}

/// A trigger's component: an ID or an inline table.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ComponentRef {
    /// A component ID.
    Id(String),
    /// An inline component (refused by this host).
    Inline(Box<ComponentDef>),
}

/// `static_response = { status_code, headers, body }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticResponse {
    /// Status code (default 200).
    pub status_code: Option<u16>,
    /// Response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Response body.
    pub body: Option<String>,
}

/// `[[trigger.cron]]` (the cron plugin refuses any other key).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronTrigger {
    /// Trigger ID (taken by Spin's manifest loader before the plugin sees it).
    pub id: Option<String>,
    /// The component it runs.
    pub component: String,
    /// Six-field expression, seconds first.
    pub cron_expression: String,
}

/// `[component.<id>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentDef {
    /// Where the `.wasm` is.
    pub source: Source,
    /// Description.
    pub description: Option<String>,
    /// Component variables: key to template.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Environment variables for WASI.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Files to mount (refused by this host).
    #[serde(default)]
    pub files: Vec<toml::Value>,
    /// Files excluded from mounts.
    #[serde(default)]
    pub exclude_files: Vec<String>,
    /// Outbound network allow-list (templates allowed).
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// Deprecated allow-list form.
    #[serde(default)]
    pub allowed_http_hosts: Vec<String>,
    /// Key-value stores (refused by this host).
    #[serde(default)]
    pub key_value_stores: Vec<String>,
    /// SQLite databases (refused by this host).
    #[serde(default)]
    pub sqlite_databases: Vec<String>,
    /// AI models (refused by this host).
    #[serde(default)]
    pub ai_models: Vec<String>,
    /// Deployment targets.
    pub targets: Option<Vec<String>>,
    /// `spin build` settings.
    pub build: Option<ComponentBuild>,
    /// `[component.x.tool.*]`.
    pub tool: Option<toml::Table>,
    /// Component-model dependency configuration.
    #[serde(default)]
    pub dependencies_inherit_configuration: bool,
    /// Component-model dependencies (refused by this host).
    pub dependencies: Option<toml::Table>,
    /// Build profiles.
    pub profile: Option<toml::Table>,
}

/// `[component.x.build]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentBuild {
    /// Command or commands.
    pub command: toml::Value,
    /// Working directory.
    pub workdir: Option<String>,
    /// Globs to watch.
    #[serde(default)]
    pub watch: Vec<String>,
}

/// A component source.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Source {
    /// A local path, relative to the manifest's folder.
    Path(String),
    /// A remote URL with digest (refused by this host).
    Url {
        /// URL.
        url: String,
        /// Digest.
        digest: String,
    },
    /// A registry package (refused by this host).
    Registry {
        /// Registry.
        registry: Option<String>,
        /// Package.
        package: String,
        /// Version.
        version: String,
    },
}

/// A manifest that has been checked, with its folder.
#[derive(Debug, Clone)]
pub struct LoadedManifest {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// Where it was read from.
    pub path: PathBuf,
    /// Its folder: sources resolve relative to it.
    pub dir: PathBuf,
}

impl LoadedManifest {
    /// Reads, parses and validates a manifest.
    pub fn load(path: &Path) -> Result<Self, HostError> {
        let text = std::fs::read_to_string(path).map_err(|source| HostError::ManifestRead {
            path: path.to_path_buf(),
            source,
        })?;
        let manifest = parse(&text).map_err(|message| HostError::Manifest {
            path: path.to_path_buf(),
            message,
        })?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(Self {
            manifest,
            path: path.to_path_buf(),
            dir,
        })
    }

    /// The `.wasm` path of a component.
    pub fn source_path(&self, id: &str) -> Result<PathBuf, HostError> {
        let def = self.manifest.component.get(id).ok_or_else(|| {
            HostError::NoSuchComponent(format!("no component {id:?} in the manifest"))
        })?;
        match &def.source {
            Source::Path(p) => Ok(self.dir.join(p)),
            _ => Err(HostError::Manifest {
                path: self.path.clone(),
                message: format!(
                    "component {id:?}: only local file sources are supported by the test host"
                ),
            }),
        }
    }
}

/// Parses and validates manifest text.
pub fn parse(text: &str) -> Result<Manifest, String> {
    let manifest: Manifest = toml::from_str(text).map_err(|e| e.to_string())?;
    validate(&manifest)?;
    Ok(manifest)
}

fn validate(m: &Manifest) -> Result<(), String> {
    if m.spin_manifest_version != 2 {
        return Err(format!(
            "spin_manifest_version {} is not supported (expected 2)",
            m.spin_manifest_version
        ));
    }
    for (name, def) in &m.variables {
        check_snake_id(name).map_err(|e| format!("variable {name:?}: {e}"))?;
        if def.required == def.default.is_some() {
            return Err(format!(
                "invalid variable {name:?}: must be `required` OR have a `default`"
            ));
        }
    }
    if let Some(kind) = m.trigger.other.keys().next() {
        return Err(format!(
            "trigger type {kind:?} is not supported by the test host (only http and cron)"
        ));
    }
    for (id, c) in &m.component {
        check_kebab_id(id).map_err(|e| format!("component ID {id:?}: {e}"))?;
        let refuse = |what: &str| {
            Err(format!(
                "component {id:?} uses {what}, which Outpost's components do not use and the test host does not provide"
            ))
        };
        if !c.files.is_empty() {
            return refuse("files");
        }
        if !c.key_value_stores.is_empty() {
            return refuse("key_value_stores");
        }
        if !c.sqlite_databases.is_empty() {
            return refuse("sqlite_databases");
        }
        if !c.ai_models.is_empty() {
            return refuse("ai_models");
        }
        if c.dependencies.as_ref().is_some_and(|d| !d.is_empty()) {
            return refuse("dependencies");
        }
        for (key, template) in &c.variables {
            check_snake_id(key).map_err(|e| format!("component {id:?} variable {key:?}: {e}"))?;
            check_template(template, &m.variables)?;
        }
        for entry in c.allowed_outbound_hosts.iter().chain(&c.allowed_http_hosts) {
            check_template(entry, &m.variables)?;
        }
    }
    for t in &m.trigger.http {
        match (&t.component, &t.static_response) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(
                    "each [[trigger.http]] needs exactly one of `component` or `static_response`"
                        .into(),
                );
            }
            (Some(ComponentRef::Inline(_)), None) => {
                return Err("inline components are not supported by the test host".into());
            }
            (Some(ComponentRef::Id(id)), None) if !m.component.contains_key(id) => {
                return Err(format!("trigger references unknown component {id:?}"));
            }
            _ => {}
        }
        if let Some(executor) = &t.executor {
            match executor.get("type").and_then(toml::Value::as_str) {
                Some("http") => {}
                Some("wagi") => {
                    return Err("the wagi executor is not supported by the test host".into());
                }
                other => return Err(format!("unknown executor type {other:?}")),
            }
        }
        if let RouteConfig::Private(p) = &t.route
            && !p.private
        {
            return Err(format!(
                "route must be a string pattern or '{{ private = true }}': '{}' has {{ private = false }}",
                t.component_id().unwrap_or("static response")
            ));
        }
    }
    for t in &m.trigger.cron {
        if !m.component.contains_key(&t.component) {
            return Err(format!(
                "cron trigger references unknown component {:?}",
                t.component
            ));
        }
    }
    Ok(())
}

impl HttpTrigger {
    /// The component ID, if the trigger runs one.
    pub fn component_id(&self) -> Option<&str> {
        match &self.component {
            Some(ComponentRef::Id(id)) => Some(id),
            _ => None,
        }
    }
}

/// Spin's rule for variable names: `[a-z][a-z0-9_]*`, no `__`, ending alphanumeric.
pub fn check_snake_id(name: &str) -> Result<(), String> {
    let Some(first) = name.chars().next() else {
        return Err("must not be empty".into());
    };
    if !first.is_ascii_lowercase() {
        return Err("must start with a lowercase ASCII letter".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err("may contain only lowercase letters, digits and underscores".into());
    }
    if name.contains("__") {
        return Err("must not contain consecutive underscores".into());
    }
    if name.ends_with('_') {
        return Err("must end with a letter or digit".into());
    }
    Ok(())
}

/// Spin's rule for component IDs: lowercase kebab-case.
pub fn check_kebab_id(id: &str) -> Result<(), String> {
    let Some(first) = id.chars().next() else {
        return Err("must not be empty".into());
    };
    if !first.is_ascii_lowercase() {
        return Err("must start with a lowercase ASCII letter".into());
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err("may contain only lowercase letters, digits and hyphens".into());
    }
    if id.contains("--") {
        return Err("must not contain consecutive hyphens".into());
    }
    if id.ends_with('-') {
        return Err("must end with a letter or digit".into());
    }
    Ok(())
}

/// One piece of a `{{ var }}` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    /// Literal text.
    Literal(String),
    /// A variable reference (trimmed).
    Variable(String),
}

/// Splits a template into literal text and `{{ name }}` references.
pub fn parse_template(template: &str) -> Result<Vec<TemplatePart>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            parts.push(TemplatePart::Literal(rest[..start].to_string()));
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed '{{{{' in {template:?}"))?;
        let name = after[..end].trim();
        check_snake_id(name).map_err(|e| format!("invalid variable name {name:?}: {e}"))?;
        parts.push(TemplatePart::Variable(name.to_string()));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Literal(rest.to_string()));
    }
    Ok(parts)
}

fn check_template(template: &str, vars: &BTreeMap<String, VariableDef>) -> Result<(), String> {
    let parts = parse_template(template).map_err(|e| format!("invalid variable template: {e}"))?;
    for part in parts {
        if let TemplatePart::Variable(name) = part
            && !vars.contains_key(&name)
        {
            return Err(format!(
                "invalid variable template: unknown variable {name:?} in {template:?}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
spin_manifest_version = 2
[application]
name = "t"
[variables]
url = { required = true }
greeting = { default = "hello" }
[[trigger.http]]
route = "/..."
component = "a"
[component.a]
source = "a.wasm"
allowed_outbound_hosts = ["{{ url }}"]
[component.a.variables]
greeting = "{{ greeting }}!"
"#;

    #[test]
    fn parses_a_minimal_manifest() {
        let m = parse(MINIMAL).unwrap();
        assert_eq!(m.application.name, "t");
        assert_eq!(m.trigger.http.len(), 1);
    }

    #[test]
    fn refuses_unknown_keys() {
        let bad = MINIMAL.replace("[component.a]\n", "[component.a]\nbogus = 1\n");
        assert!(parse(&bad).is_err());
        let bad = MINIMAL.replace("name = \"t\"", "name = \"t\"\nbogus = 1");
        assert!(parse(&bad).is_err());
        let bad = format!(
            "{MINIMAL}\n[[trigger.cron]]\ncomponent = \"a\"\ncron_expression = \"0 * * * * *\"\nextra = 1\n"
        );
        assert!(parse(&bad).is_err());
    }

    #[test]
    fn variables_need_required_or_default() {
        let bad = MINIMAL.replace("greeting = { default = \"hello\" }", "greeting = {}");
        let e = parse(&bad).unwrap_err();
        assert!(e.contains("must be `required` OR have a `default`"), "{e}");
        let bad = MINIMAL.replace(
            "greeting = { default = \"hello\" }",
            "greeting = { default = \"x\", required = true }",
        );
        assert!(parse(&bad).is_err());
    }

    #[test]
    fn templates_must_name_declared_variables() {
        let bad = MINIMAL.replace("\"{{ greeting }}!\"", "\"{{ nope }}\"");
        let e = parse(&bad).unwrap_err();
        assert!(e.contains("unknown variable"), "{e}");
    }

    #[test]
    fn names_follow_spin_rules() {
        for ok in ["a", "db_url", "a1_b2"] {
            assert!(check_snake_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "1a", "a__b", "a_", "a-b", "_a"] {
            assert!(check_snake_id(bad).is_err(), "{bad}");
        }
        for ok in ["a", "feed-skeleton", "a1-b2"] {
            assert!(check_kebab_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "1a", "a--b", "a-", "a_b"] {
            assert!(check_kebab_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn template_parts() {
        assert_eq!(
            parse_template("x{{ a }}y{{b}}").unwrap(),
            vec![
                TemplatePart::Literal("x".into()),
                TemplatePart::Variable("a".into()),
                TemplatePart::Literal("y".into()),
                TemplatePart::Variable("b".into()),
            ]
        );
        assert!(parse_template("{{ a ").is_err());
    }

    #[test]
    fn private_false_is_refused() {
        let bad = MINIMAL.replace("route = \"/...\"", "route = { private = false }");
        assert!(parse(&bad).is_err());
        let ok = MINIMAL.replace("route = \"/...\"", "route = { private = true }");
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn the_product_manifest_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../spin.toml");
        LoadedManifest::load(&path).unwrap();
    }
}
