//! The deployment files under `deploy/` agree with `spin.toml`: every
//! component the cron trigger serves is driven from outside on the same
//! schedule through its `POST /jobs/<name>` route (Kubernetes CronJobs,
//! systemd timers, Supabase pg_cron), and every Spin variable marked secret
//! reaches the SpinApp from the Kubernetes Secret. A job added to or
//! rescheduled in `spin.toml`, or a secret variable added, fails here until
//! `deploy/` follows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value as Yaml;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> Result<String> {
    let path = root().join(relative);
    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()).into())
}

fn manifest() -> Result<toml::Table> {
    Ok(read("spin.toml")?.parse()?)
}

/// Component id -> six-field cron expression, from `[[trigger.cron]]`.
fn cron_schedules(manifest: &toml::Table) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let triggers = manifest
        .get("trigger")
        .and_then(|t| t.get("cron"))
        .and_then(toml::Value::as_array)
        .ok_or("spin.toml has no [[trigger.cron]]")?;
    for trigger in triggers {
        let component = trigger
            .get("component")
            .and_then(toml::Value::as_str)
            .ok_or("a cron trigger without component")?;
        let expression = trigger
            .get("cron_expression")
            .and_then(toml::Value::as_str)
            .ok_or("a cron trigger without cron_expression")?;
        if out
            .insert(component.to_string(), expression.to_string())
            .is_some()
        {
            return Err(format!("{component} has two cron triggers").into());
        }
    }
    Ok(out)
}

/// The string routes of `[[trigger.http]]`, with their component.
fn http_routes(manifest: &toml::Table) -> Result<Vec<(String, String)>> {
    let triggers = manifest
        .get("trigger")
        .and_then(|t| t.get("http"))
        .and_then(toml::Value::as_array)
        .ok_or("spin.toml has no [[trigger.http]]")?;
    Ok(triggers
        .iter()
        .filter_map(|t| {
            Some((
                t.get("route")?.as_str()?.to_string(),
                t.get("component")?.as_str()?.to_string(),
            ))
        })
        .collect())
}

/// The same schedule for a scheduler with minute resolution (Kubernetes,
/// cron, pg_cron): the seconds field dropped. Only a single second is
/// dropped; `*/10` seconds, say, would fire six times a minute and has no
/// five-field equivalent.
fn five_field(expression: &str) -> Result<String> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let [seconds, rest @ ..] = fields.as_slice() else {
        return Err("empty cron expression".into());
    };
    if fields.len() != 6 {
        return Err(format!("{expression:?}: the cron plugin takes exactly 6 fields").into());
    }
    match seconds.parse::<u8>() {
        Ok(s) if s < 60 => Ok(rest.join(" ")),
        _ => Err(format!(
            "{expression:?}: only a single second (0-59) can be dropped for a minute-resolution scheduler"
        )
        .into()),
    }
}

/// The same schedule as a systemd `OnCalendar=` (which keeps the seconds).
/// Covers `*`, `N` and `*/N` in the first five fields and `*` as weekday:
/// what spin.toml uses; anything else is refused rather than guessed.
fn systemd_calendar(expression: &str) -> Result<String> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let [sec, min, hour, day, month, weekday] = fields.as_slice() else {
        return Err(format!("{expression:?}: the cron plugin takes exactly 6 fields").into());
    };
    if *weekday != "*" {
        return Err(format!("{expression:?}: weekdays are not converted").into());
    }
    let part = |field: &str| -> Result<String> {
        if field == "*" {
            return Ok("*".into());
        }
        if let Some(step) = field.strip_prefix("*/") {
            let step: u8 = step.parse()?;
            return Ok(format!("00/{step}"));
        }
        let n: u8 = field.parse()?;
        Ok(format!("{n:02}"))
    };
    Ok(format!(
        "*-{}-{} {}:{}:{} UTC",
        part(month)?,
        part(day)?,
        part(hour)?,
        part(min)?,
        part(sec)?
    ))
}

fn yaml_documents(relative: &str) -> Result<Vec<Yaml>> {
    let text = read(relative)?;
    let mut out = Vec::new();
    // Documents are separated by a line `---` (no serde dependency needed
    // for serde_yaml's multi-document deserializer).
    for document in text.split("\n---\n") {
        let value: Yaml = serde_yaml::from_str(document)?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

fn single_document(relative: &str, kind: &str) -> Result<Yaml> {
    let mut documents = yaml_documents(relative)?;
    if documents.len() != 1 {
        return Err(format!("{relative}: expected one document").into());
    }
    let document = documents.remove(0);
    if document["kind"].as_str() != Some(kind) {
        return Err(format!("{relative}: expected kind {kind}").into());
    }
    Ok(document)
}

fn text(value: &Yaml) -> &str {
    value.as_str().unwrap_or("")
}

#[test]
fn converters_refuse_what_they_cannot_express() -> Result {
    assert_eq!(five_field("0 */5 * * * *")?, "*/5 * * * *");
    assert_eq!(five_field("30 * * * * *")?, "* * * * *");
    assert!(five_field("*/10 * * * * *").is_err());
    assert!(five_field("* * * * *").is_err());
    assert_eq!(systemd_calendar("0 */5 * * * *")?, "*-*-* *:00/5:00 UTC");
    assert_eq!(systemd_calendar("15 * * * * *")?, "*-*-* *:*:15 UTC");
    assert_eq!(systemd_calendar("0 30 4 * * *")?, "*-*-* 04:30:00 UTC");
    assert!(systemd_calendar("0 0 * * * MON").is_err());
    Ok(())
}

#[test]
fn every_cron_component_has_a_job_route() -> Result {
    let manifest = manifest()?;
    let routes = http_routes(&manifest)?;
    for component in cron_schedules(&manifest)?.keys() {
        let route = format!("/jobs/{component}");
        assert!(
            routes.iter().any(|(r, c)| *r == route && c == component),
            "{component} is served by the cron trigger but has no {route} route: \
             hosts without the cron plugin could not run it"
        );
    }
    Ok(())
}

#[test]
fn kubernetes_cronjobs_call_every_cron_component_on_its_schedule() -> Result {
    let manifest = manifest()?;
    let schedules = cron_schedules(&manifest)?;
    let app = single_document("deploy/spinkube/spinapp.yaml", "SpinApp")?;
    let service = text(&app["metadata"]["name"]);
    let secret = single_document("deploy/spinkube/secret.yaml", "Secret")?;
    let secret_name = text(&secret["metadata"]["name"]);

    let mut called = BTreeMap::new();
    for job in yaml_documents("deploy/spinkube/cronjobs.yaml")? {
        let name = text(&job["metadata"]["name"]).to_string();
        assert_eq!(job["apiVersion"].as_str(), Some("batch/v1"), "{name}");
        assert_eq!(job["kind"].as_str(), Some("CronJob"), "{name}");
        // Spin's cron trigger runs in UTC.
        assert_eq!(job["spec"]["timeZone"].as_str(), Some("Etc/UTC"), "{name}");
        let pod = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        let containers = pod["containers"].as_sequence().ok_or("no containers")?;
        assert_eq!(containers.len(), 1, "{name}");
        let container = &containers[0];
        let script: Vec<&str> = container["command"]
            .as_sequence()
            .into_iter()
            .flatten()
            .chain(container["args"].as_sequence().into_iter().flatten())
            .map(text)
            .collect();
        let script = script.join(" ");
        assert!(
            script.contains("Authorization: Bearer %s") && script.contains("\"$JOB_SECRET\""),
            "{name} does not send the job secret: {script}"
        );
        let env = container["env"].as_sequence().ok_or("no env")?;
        let secret_env = env
            .iter()
            .find(|e| e["name"].as_str() == Some("JOB_SECRET"))
            .ok_or(format!("{name}: no JOB_SECRET"))?;
        assert_eq!(
            text(&secret_env["valueFrom"]["secretKeyRef"]["name"]),
            secret_name,
            "{name}"
        );
        assert_eq!(
            text(&secret_env["valueFrom"]["secretKeyRef"]["key"]),
            "job_secret",
            "{name}"
        );
        let prefix = format!("http://{service}/jobs/");
        let start = script
            .find(&prefix)
            .ok_or(format!("{name} calls no {prefix}<job>: {script}"))?;
        let component: String = script[start + prefix.len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        let schedule = text(&job["spec"]["schedule"]).to_string();
        if called.insert(component.clone(), schedule).is_some() {
            return Err(format!("two CronJobs call /jobs/{component}").into());
        }
    }

    let expected = schedules
        .iter()
        .map(|(component, expression)| Ok((component.clone(), five_field(expression)?)))
        .collect::<Result<BTreeMap<_, _>>>()?;
    assert_eq!(
        called, expected,
        "deploy/spinkube/cronjobs.yaml (left) must call each cron component of spin.toml (right) on its schedule, seconds dropped"
    );
    Ok(())
}

#[test]
fn the_spinapp_gets_every_secret_variable_from_the_secret() -> Result {
    let manifest = manifest()?;
    let declared = manifest
        .get("variables")
        .and_then(toml::Value::as_table)
        .ok_or("spin.toml has no [variables]")?;
    let app = single_document("deploy/spinkube/spinapp.yaml", "SpinApp")?;
    assert_eq!(
        app["apiVersion"].as_str(),
        Some("core.spinkube.dev/v1alpha1")
    );
    assert_eq!(
        app["spec"]["executor"].as_str(),
        Some("containerd-shim-spin")
    );
    assert!(app["spec"]["replicas"].as_u64().unwrap_or(0) >= 1);
    let secret = single_document("deploy/spinkube/secret.yaml", "Secret")?;
    let secret_name = text(&secret["metadata"]["name"]);
    let secret_keys: BTreeSet<&str> = secret["stringData"]
        .as_mapping()
        .ok_or("secret.yaml has no stringData")?
        .keys()
        .map(text)
        .collect();

    let mut given = BTreeMap::new();
    for variable in app["spec"]["variables"]
        .as_sequence()
        .ok_or("the SpinApp has no variables")?
    {
        let name = text(&variable["name"]);
        assert!(
            declared.contains_key(name),
            "the SpinApp sets {name}, which spin.toml does not declare"
        );
        assert!(
            given.insert(name, variable).is_none(),
            "the SpinApp sets {name} twice"
        );
    }

    for (name, declaration) in declared {
        let secret_variable =
            declaration.get("secret").and_then(toml::Value::as_bool) == Some(true);
        let required = declaration.get("required").and_then(toml::Value::as_bool) == Some(true);
        let variable = given.get(name.as_str());
        if required {
            assert!(variable.is_some(), "required variable {name} is not set");
        }
        if !secret_variable {
            continue;
        }
        let variable = variable.ok_or(format!(
            "secret variable {name} does not reach the SpinApp from the Secret"
        ))?;
        assert!(
            variable["value"].is_null(),
            "secret variable {name} is written in the SpinApp instead of the Secret"
        );
        let reference = &variable["valueFrom"]["secretKeyRef"];
        assert_eq!(text(&reference["name"]), secret_name, "{name}");
        assert_eq!(text(&reference["key"]), name.as_str(), "{name}");
        assert!(
            secret_keys.contains(name.as_str()),
            "secret.yaml has no key {name}"
        );
        if required {
            assert_ne!(
                reference["optional"].as_bool(),
                Some(true),
                "required {name} must not be optional"
            );
        }
    }
    Ok(())
}

#[test]
fn the_http_only_manifest_is_spin_toml_without_cron_triggers() -> Result {
    let output = Command::new("sh")
        .arg(root().join("deploy/http-only-manifest.sh"))
        .arg(root().join("spin.toml"))
        .output()?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stripped: toml::Table = String::from_utf8(output.stdout)?.parse()?;
    let mut expected = manifest()?;
    assert!(!cron_schedules(&expected)?.is_empty());
    if let Some(trigger) = expected
        .get_mut("trigger")
        .and_then(toml::Value::as_table_mut)
    {
        trigger.remove("cron");
    }
    assert_eq!(stripped, expected);
    Ok(())
}

#[test]
fn systemd_timers_fire_on_the_spin_toml_schedule() -> Result {
    let schedules = cron_schedules(&manifest()?)?;
    let mut timers = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("deploy/systemd"))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(job) = name
            .strip_prefix("outpost-job-")
            .and_then(|n| n.strip_suffix(".timer"))
        {
            timers.insert(job.to_string());
        }
    }
    assert_eq!(
        timers,
        schedules.keys().cloned().collect::<BTreeSet<_>>(),
        "one deploy/systemd/outpost-job-<name>.timer per cron component"
    );
    for (component, expression) in &schedules {
        let unit = read(&format!("deploy/systemd/outpost-job-{component}.timer"))?;
        let setting = |key: &str| {
            unit.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(str::trim)
                .map(str::to_string)
        };
        assert_eq!(
            setting("OnCalendar="),
            Some(systemd_calendar(expression)?),
            "{component}: spin.toml says {expression:?}"
        );
        assert_eq!(
            setting("Unit="),
            Some(format!("outpost-job@{component}.service"))
        );
    }
    let service = read("deploy/systemd/outpost-job@.service")?;
    assert!(service.contains("ExecStart=/usr/local/bin/outpost-job %i"));
    Ok(())
}

#[test]
fn supabase_pg_cron_calls_every_cron_component_on_its_schedule() -> Result {
    let schedules = cron_schedules(&manifest()?)?;
    let sql = read("deploy/supabase/jobs.sql")?;
    let mut scheduled = BTreeMap::new();
    for line in sql
        .lines()
        .filter(|l| l.starts_with("select cron.schedule("))
    {
        // select cron.schedule('outpost-<job>', '<schedule>', $$select outpost_jobs.call('<job>')$$);
        let quoted: Vec<&str> = line.split('\'').collect();
        let [_, name, _, schedule, _, called, ..] = quoted.as_slice() else {
            return Err(format!("unexpected line: {line}").into());
        };
        assert_eq!(*name, format!("outpost-{called}"), "{line}");
        assert!(line.contains("$$select outpost_jobs.call('"), "{line}");
        if scheduled
            .insert(called.to_string(), schedule.to_string())
            .is_some()
        {
            return Err(format!("{called} is scheduled twice").into());
        }
    }
    let expected = schedules
        .iter()
        .map(|(component, expression)| Ok((component.clone(), five_field(expression)?)))
        .collect::<Result<BTreeMap<_, _>>>()?;
    assert_eq!(scheduled, expected, "deploy/supabase/jobs.sql vs spin.toml");
    assert!(sql.contains("'/jobs/' || job"));
    assert!(sql.contains("'Authorization', 'Bearer ' ||"));
    Ok(())
}
