//! `outpost rollout start -f rollout.toml`: a rollout described in a file, like a job document, so it can
//! be reviewed and kept in version control. The keys are the flags' names; rates are written like on the
//! command line (`"2%"` or `0.02`), durations like `"5m"`. Unknown keys are refused, so a typo never
//! silently drops a gate.
//!
//! ```toml
//! id = "digits-2.1.0-eu"          # optional
//! bundle = "digits@2.1.0"
//! selector = "region=eu"          # optional: every device
//! waves = ["1", "10%", "100%"]    # optional: 1%, 10%, 50%, 100%
//! bake = "10m"                    # optional: 5m
//! on_failure = "rollback"         # optional: pause
//! shadow = "5m"                   # optional
//! watch = "5m"                    # optional: 5m
//! quorum = "80%"                  # optional: 80%
//! default_gates = true            # optional: false leaves out the gates not named below
//!
//! [gates]                         # optional; each key optional
//! max_failure_rate = "10%"
//! max_error_rate = "1%"
//! max_p95_regression = "25%"
//! min_shadow_agreement = "95%"
//! max_psi = 0.25
//! ```

use crate::daemon::rollouts::StartRequest;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutFile {
    id: Option<String>,
    bundle: String,
    #[serde(default)]
    selector: String,
    waves: Option<Vec<String>>,
    bake: Option<String>,
    on_failure: Option<String>,
    shadow: Option<String>,
    watch: Option<String>,
    quorum: Option<Rate>,
    default_gates: Option<bool>,
    #[serde(default)]
    gates: GatesFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GatesFile {
    max_failure_rate: Option<Rate>,
    max_error_rate: Option<Rate>,
    max_p95_regression: Option<Rate>,
    min_shadow_agreement: Option<Rate>,
    max_psi: Option<f64>,
}

/// `"2%"` or `0.02`, as on the command line.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Rate {
    Text(String),
    Number(f64),
}

impl Rate {
    fn value(&self, key: &str) -> Result<f64, String> {
        let text = match self {
            Rate::Text(s) => s.clone(),
            Rate::Number(n) => n.to_string(),
        };
        super::rollout::rate(&text).map_err(|e| format!("{key}: {e}"))
    }
}

fn secs(key: &str, v: &Option<String>, default: u64) -> Result<u64, String> {
    v.as_deref().map_or(Ok(default), |s| super::parse_lifetime(s).map_err(|e| format!("{key}: {e}")))
}

/// Reads `text` (the file's contents) into the request the API takes; `path` names it in errors.
pub fn parse(path: &str, text: &str) -> Result<StartRequest, String> {
    let f: RolloutFile = toml::from_str(text).map_err(|e| format!("{path}: {e}"))?;
    let rate = |key: &str, r: &Option<Rate>| r.as_ref().map(|r| r.value(key)).transpose();
    let g = &f.gates;
    Ok(StartRequest {
        remove: None,
        bundle: f.bundle,
        selector: f.selector,
        waves: f.waves.map_or_else(|| super::rollout::DEFAULT_WAVES.to_owned(), |w| w.join(",")),
        bake_secs: secs("bake", &f.bake, 300)?,
        max_failure_rate: rate("gates.max_failure_rate", &g.max_failure_rate)?,
        max_error_rate: rate("gates.max_error_rate", &g.max_error_rate)?,
        max_p95_regression: rate("gates.max_p95_regression", &g.max_p95_regression)?,
        min_shadow_agreement: rate("gates.min_shadow_agreement", &g.min_shadow_agreement)?,
        max_psi: g.max_psi,
        shadow_secs: f.shadow.as_ref().map(|_| secs("shadow", &f.shadow, 0).map(|s| s as u32)).transpose()?,
        quorum: rate("quorum", &f.quorum)?,
        on_failure: Some(f.on_failure.unwrap_or_else(|| "pause".into())),
        watch_secs: Some(secs("watch", &f.watch, 300)? as u32),
        id: f.id,
        no_default_gates: f.default_gates == Some(false),
    })
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn a_rollout_file_reads_like_the_flags() {
        let text = r#"
            id = "eu-canary"
            bundle = "digits@2.1.0"
            selector = "region=eu"
            waves = ["1", "10%", "100%"]
            bake = "10m"
            on_failure = "rollback"
            shadow = "2m"
            quorum = "50%"
            [gates]
            max_error_rate = "1%"
            min_shadow_agreement = 0.95
            max_psi = 0.25
        "#;
        let r = parse("rollout.toml", text).unwrap();
        assert_eq!(
            (r.id.as_deref(), r.bundle.as_str(), r.selector.as_str()),
            (Some("eu-canary"), "digits@2.1.0", "region=eu")
        );
        assert_eq!(
            (r.waves.as_str(), r.bake_secs, r.shadow_secs, r.watch_secs),
            ("1,10%,100%", 600, Some(120), Some(300))
        );
        assert_eq!(
            (r.quorum, r.max_error_rate, r.min_shadow_agreement, r.max_psi),
            (Some(0.5), Some(0.01), Some(0.95), Some(0.25))
        );
        assert_eq!((r.max_failure_rate, r.on_failure.as_deref(), r.no_default_gates), (None, Some("rollback"), false));
    }

    #[test]
    fn a_minimal_file_takes_the_flag_defaults_and_can_turn_default_gates_off() {
        let r = parse("r.toml", "bundle = \"digits@2.1.0\"\ndefault_gates = false\n").unwrap();
        assert_eq!((r.waves.as_str(), r.bake_secs, r.on_failure.as_deref()), ("1%,10%,50%,100%", 300, Some("pause")));
        assert!(r.no_default_gates && r.max_error_rate.is_none() && r.shadow_secs.is_none());
    }

    #[test]
    fn typos_ambiguous_rates_and_bad_durations_are_refused_by_name() {
        for (text, want) in [
            ("bundle = \"d@1.0.0\"\n[gates]\nmax_eror_rate = \"1%\"\n", "max_eror_rate"),
            ("bundle = \"d@1.0.0\"\n[gates]\nmax_error_rate = 1\n", "gates.max_error_rate"),
            ("bundle = \"d@1.0.0\"\nbake = \"5 minutes\"\n", "bake"),
            ("selector = \"a=b\"\n", "bundle"),
        ] {
            let err = parse("r.toml", text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
