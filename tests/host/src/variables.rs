//! Spin variables (SPIN.md §5): application variables resolved from, in
//! order, explicit overrides (`spin up --variable k=v`), the environment
//! (`SPIN_VARIABLE_<NAME>`, then a `.env` file in the working directory),
//! and the manifest default. A required variable nobody provides stops
//! start-up with Spin's own message. Component variables are templates over
//! application variables; a guest may read only its own component's keys.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::HostError;
use crate::manifest::{Manifest, TemplatePart, check_snake_id, parse_template};

/// Where variable values come from, besides the manifest defaults.
#[derive(Debug, Clone, Default)]
pub struct VariableSources {
    /// Highest priority, like `spin up --variable k=v`.
    pub overrides: BTreeMap<String, String>,
    /// The environment to read `SPIN_VARIABLE_*` from; `None` means this
    /// process's environment plus `./.env`. Tests pass a map so that tests
    /// running in parallel do not share one environment.
    pub env: Option<BTreeMap<String, String>>,
}

/// The environment variable Spin reads for a variable: `SPIN_VARIABLE_` and
/// the name uppercased.
pub fn env_key(name: &str) -> String {
    format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())
}

/// Resolves every application variable. A required variable without a value
/// is an error naming all of them, as Spin prints it.
pub fn resolve_app_variables(
    manifest: &Manifest,
    sources: &VariableSources,
) -> Result<BTreeMap<String, String>, HostError> {
    let process_env;
    let env = match &sources.env {
        Some(map) => map,
        None => {
            let mut map: BTreeMap<String, String> = read_dotenv(Path::new(".env"));
            map.extend(std::env::vars());
            process_env = map;
            &process_env
        }
    };
    let mut values = BTreeMap::new();
    let mut missing = Vec::new();
    for (name, def) in &manifest.variables {
        let value = sources
            .overrides
            .get(name)
            .or_else(|| env.get(&env_key(name)))
            .or(def.default.as_ref());
        match value {
            Some(v) => {
                values.insert(name.clone(), v.clone());
            }
            None => missing.push(name.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(HostError::MissingVariables(missing));
    }
    Ok(values)
}

/// Renders a `{{ var }}` template with resolved application variables.
pub fn render(template: &str, values: &BTreeMap<String, String>) -> Result<String, HostError> {
    let mut out = String::new();
    for part in parse_template(template).map_err(HostError::Template)? {
        match part {
            TemplatePart::Literal(s) => out.push_str(&s),
            TemplatePart::Variable(name) => match values.get(&name) {
                Some(v) => out.push_str(v),
                None => {
                    return Err(HostError::Template(format!(
                        "unknown variable {name:?} in {template:?}"
                    )));
                }
            },
        }
    }
    Ok(out)
}

/// A `.env` file: `KEY=value` lines, `#` comments, optional quotes.
fn read_dotenv(path: &Path) -> BTreeMap<String, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return BTreeMap::new();
    };
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let (k, v) = line.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// What `fermyon:spin/variables.get` answers, before it is turned into the
/// WIT error type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetError {
    /// The name is not a valid variable name.
    InvalidName(String),
    /// The component has no such key.
    Undefined(String),
}

/// Looks `name` up among one component's resolved variables.
pub fn get(
    component: &str,
    vars: &BTreeMap<String, String>,
    name: &str,
) -> Result<String, GetError> {
    if let Err(e) = check_snake_id(name) {
        return Err(GetError::InvalidName(format!("{name:?}: {e}")));
    }
    vars.get(name)
        .cloned()
        .ok_or_else(|| GetError::Undefined(format!("no variable for {component:?}.{name:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse;

    const M: &str = r#"
spin_manifest_version = 2
[application]
name = "t"
[variables]
db_url = { required = true }
pg_addr = { required = true }
greeting = { default = "hello" }
[[trigger.http]]
route = "/..."
component = "a"
[component.a]
source = "a.wasm"
[component.a.variables]
greeting = "{{ greeting }}!"
"#;

    #[test]
    fn missing_required_variables_use_spins_message() {
        let m = parse(M).unwrap();
        let sources = VariableSources {
            env: Some(BTreeMap::new()),
            ..Default::default()
        };
        let e = resolve_app_variables(&m, &sources).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"provider error: no provider resolved required variable(s): [Key("db_url"), Key("pg_addr")]"#
        );
    }

    #[test]
    fn overrides_beat_env_beat_defaults() {
        let m = parse(M).unwrap();
        let mut env = BTreeMap::new();
        env.insert("SPIN_VARIABLE_DB_URL".to_string(), "from-env".to_string());
        env.insert("SPIN_VARIABLE_PG_ADDR".to_string(), "env-addr".to_string());
        env.insert(
            "SPIN_VARIABLE_GREETING".to_string(),
            "env-greeting".to_string(),
        );
        let mut overrides = BTreeMap::new();
        overrides.insert("pg_addr".to_string(), "override".to_string());
        let values = resolve_app_variables(
            &m,
            &VariableSources {
                overrides,
                env: Some(env),
            },
        )
        .unwrap();
        assert_eq!(values["db_url"], "from-env");
        assert_eq!(values["pg_addr"], "override");
        assert_eq!(values["greeting"], "env-greeting");
        assert_eq!(render("{{ greeting }}!", &values).unwrap(), "env-greeting!");
    }

    #[test]
    fn get_reads_only_the_components_keys() {
        let mut vars = BTreeMap::new();
        vars.insert("greeting".to_string(), "hi".to_string());
        assert_eq!(get("a", &vars, "greeting").unwrap(), "hi");
        assert_eq!(
            get("a", &vars, "db_url").unwrap_err(),
            GetError::Undefined(r#"no variable for "a"."db_url""#.into())
        );
        assert!(matches!(
            get("a", &vars, "Bad-Name"),
            Err(GetError::InvalidName(_))
        ));
    }
}

mod host {
    //! The `fermyon:spin/variables@2.0.0` host implementation.
    use crate::bindings::fermyon::spin2_0_0::variables::{Error, Host};
    use crate::runtime::HostState;

    impl Host for HostState {
        async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, Error>> {
            Ok(
                super::get(&self.component.id, &self.component.variables, &name).map_err(
                    |e| match e {
                        super::GetError::InvalidName(m) => Error::InvalidName(m),
                        super::GetError::Undefined(m) => Error::Undefined(m),
                    },
                ),
            )
        }
    }
}
