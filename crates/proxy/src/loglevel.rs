//! Log levels changed at runtime through the admin's `POST /logging`, with Envoy's logger
//! names and levels, so `curl -X POST 'localhost:15000/logging?rbac=debug'` works as on an
//! Istio sidecar.
//!
//! The process's tracing subscriber belongs to the binary; it hands the proxy a
//! [`LogControl`] ([`install`]) that replaces the filter. This module keeps the level of each
//! Envoy logger and turns the table into one filter (`EnvFilter` directives): the base level
//! (`misc`, or `RUST_LOG` as the process started with it), then one `target=level` per
//! logger that was given its own level. Envoy's semantics (admin docs, `/logging`): no
//! parameter lists the loggers; `?level=<l>` sets every logger; `?<logger>=<l>` one logger;
//! `?paths=<logger>:<l>,<logger>:<l>` several. Levels are Envoy's: `trace`, `debug`, `info`,
//! `warning`, `error`, `critical` (our `error`), `off`.
//!
//! | Envoy logger | trustmesh tracing targets |
//! |---|---|
//! | `rbac` | `trustmesh_proxy::authz` (each decision and shadow result at debug) |
//! | `jwt` | `trustmesh_proxy::jwt`, `trustmesh_proxy::authn` |
//! | `ext_authz` | `trustmesh_proxy::extauthz`, `trustmesh_proxy::custom` |
//! | `http` | `trustmesh_proxy::http`, `::forward`, `::route`, `::normalize` |
//! | `connection` | `trustmesh_proxy::inbound`, `::outbound`, `::captured`, `::tcp`, `::relay`, `::tls`, `::hbone` |
//! | `upstream` | `trustmesh_proxy::upstream`, `::tunnel`, `::originate`, `::mesh` |
//! | `admin` | `trustmesh_proxy::admin` |
//! | `config` | `trustmesh_proxy::reload`, `::snapshot`, `::config`, `::xds`, `trustmesh_xds`, `trustmesh_policy`, `trustmesh_registry` |
//! | `dns` | `trustmesh_dns`, `trustmesh_proxy::names` |
//! | `main` | `trustmesh_proxy::run`, `::state`, `::workers`, `trustmesh_lifecycle` |
//! | `misc` | everything else (the base level) |

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

/// What the binary gives the proxy: replace the tracing filter with `directives`
/// (`EnvFilter` syntax). An error is a sentence.
pub trait LogControl: Send + Sync {
    fn set_filter(&self, directives: &str) -> Result<(), String>;
}

/// Envoy's loggers that mean something here, and the tracing targets each stands for.
pub const LOGGERS: &[(&str, &[&str])] = &[
    ("admin", &["trustmesh_proxy::admin"]),
    (
        "config",
        &[
            "trustmesh_proxy::reload",
            "trustmesh_proxy::snapshot",
            "trustmesh_proxy::config",
            "trustmesh_proxy::xds",
            "trustmesh_xds",
            "trustmesh_policy",
            "trustmesh_registry",
        ],
    ),
    (
        "connection",
        &[
            "trustmesh_proxy::inbound",
            "trustmesh_proxy::outbound",
            "trustmesh_proxy::captured",
            "trustmesh_proxy::tcp",
            "trustmesh_proxy::relay",
            "trustmesh_proxy::tls",
            "trustmesh_proxy::hbone",
        ],
    ),
    ("dns", &["trustmesh_dns", "trustmesh_proxy::names"]),
    (
        "ext_authz",
        &["trustmesh_proxy::extauthz", "trustmesh_proxy::custom"],
    ),
    (
        "http",
        &[
            "trustmesh_proxy::http",
            "trustmesh_proxy::forward",
            "trustmesh_proxy::route",
            "trustmesh_proxy::normalize",
        ],
    ),
    ("jwt", &["trustmesh_proxy::jwt", "trustmesh_proxy::authn"]),
    (
        "main",
        &[
            "trustmesh_proxy::run",
            "trustmesh_proxy::state",
            "trustmesh_proxy::workers",
            "trustmesh_lifecycle",
        ],
    ),
    ("misc", &[]),
    ("rbac", &["trustmesh_proxy::authz"]),
    (
        "upstream",
        &[
            "trustmesh_proxy::upstream",
            "trustmesh_proxy::tunnel",
            "trustmesh_proxy::originate",
            "trustmesh_proxy::mesh",
        ],
    ),
];

/// Envoy's level names, and the tracing level each becomes.
pub const LEVELS: &[(&str, &str)] = &[
    ("trace", "trace"),
    ("debug", "debug"),
    ("info", "info"),
    ("warning", "warn"),
    ("error", "error"),
    ("critical", "error"),
    ("off", "off"),
];

struct State {
    control: Box<dyn LogControl>,
    /// The filter the process started with (`RUST_LOG`, or `info`).
    base: String,
    /// Envoy level per logger given one through `/logging`.
    levels: BTreeMap<&'static str, &'static str>,
}

static STATE: OnceLock<Mutex<State>> = OnceLock::new();

/// Gives the proxy control of the log filter; `base` is the filter in force now. Only the
/// first call counts (one subscriber per process).
pub fn install(control: Box<dyn LogControl>, base: &str) {
    let _ = STATE.set(Mutex::new(State {
        control,
        base: base.to_string(),
        levels: BTreeMap::new(),
    }));
}

/// Why a `/logging` request was refused (`400`), or could not be applied (`503`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoggingError {
    BadRequest(String),
    Unavailable(String),
}

fn level(v: &str) -> Result<&'static str, LoggingError> {
    LEVELS
        .iter()
        .find(|(n, _)| *n == v)
        .map(|(n, _)| *n)
        .ok_or_else(|| {
            LoggingError::BadRequest(format!(
                "unknown level {v:?}; the levels are {}",
                LEVELS.iter().map(|l| l.0).collect::<Vec<_>>().join(", ")
            ))
        })
}

fn logger(name: &str) -> Result<&'static str, LoggingError> {
    LOGGERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, _)| *n)
        .ok_or_else(|| {
            LoggingError::BadRequest(format!(
                "unknown logger {name:?}; the loggers are {}",
                LOGGERS.iter().map(|l| l.0).collect::<Vec<_>>().join(", ")
            ))
        })
}

/// The changes a query asks for: `(logger, level)`, `None` as logger meaning every logger.
/// Everything is checked before anything is applied.
pub fn parse_query(query: &str) -> Result<Vec<(Option<&'static str>, &'static str)>, LoggingError> {
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "level" => out.push((None, level(v)?)),
            "paths" => {
                for item in v.split(',').filter(|i| !i.is_empty()) {
                    let (name, l) = item.split_once(':').ok_or_else(|| {
                        LoggingError::BadRequest(format!(
                            "paths entry {item:?} is not <logger>:<level>"
                        ))
                    })?;
                    out.push((Some(logger(name)?), level(l)?));
                }
            }
            name => out.push((Some(logger(name)?), level(v)?)),
        }
    }
    Ok(out)
}

/// The filter for `base` plus the per-logger `levels` (see the module docs).
pub fn directives(base: &str, levels: &BTreeMap<&'static str, &'static str>) -> String {
    let tracing_level = |envoy: &str| {
        LEVELS
            .iter()
            .find(|(n, _)| *n == envoy)
            .map_or("info", |l| l.1)
    };
    let mut d = match levels.get("misc") {
        Some(l) => tracing_level(l).to_string(),
        None => base.to_string(),
    };
    for (name, targets) in LOGGERS {
        if let Some(l) = levels.get(name) {
            for t in *targets {
                d.push_str(&format!(",{t}={}", tracing_level(l)));
            }
        }
    }
    d
}

/// Applies the changes of a `POST /logging` query and returns the listing Envoy answers with.
pub fn apply(query: &str) -> Result<String, LoggingError> {
    let changes = parse_query(query)?;
    let Some(state) = STATE.get() else {
        return Err(LoggingError::Unavailable(
            "log levels cannot be changed: this process did not hand its log filter to the proxy"
                .into(),
        ));
    };
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    if !changes.is_empty() {
        let mut levels = s.levels.clone();
        for (name, l) in changes {
            match name {
                Some(n) => {
                    levels.insert(n, l);
                }
                None => {
                    for (n, _) in LOGGERS {
                        levels.insert(n, l);
                    }
                }
            }
        }
        let d = directives(&s.base, &levels);
        s.control
            .set_filter(&d)
            .map_err(LoggingError::Unavailable)?;
        tracing::info!(filter = %d, "log levels changed through the admin endpoint");
        s.levels = levels;
    }
    Ok(listing(&s.base, &s.levels))
}

/// The loggers and their levels, as Envoy lists them (`active loggers:` then `  name: level`).
pub fn list() -> String {
    match STATE.get() {
        Some(state) => {
            let s = state.lock().unwrap_or_else(|e| e.into_inner());
            listing(&s.base, &s.levels)
        }
        None => listing("info", &BTreeMap::new()),
    }
}

fn listing(base: &str, levels: &BTreeMap<&'static str, &'static str>) -> String {
    // A logger without its own level runs at the base filter's default level.
    let default = base
        .split(',')
        .find(|d| !d.contains('='))
        .map(|d| match d.trim() {
            "warn" => "warning",
            other => other,
        })
        .filter(|d| LEVELS.iter().any(|l| l.0 == *d))
        .unwrap_or("info");
    let mut out = String::from("active loggers:\n");
    for (name, _) in LOGGERS {
        let l = levels.get(name).copied().unwrap_or(default);
        out.push_str(&format!("  {name}: {l}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_follow_envoy() {
        assert_eq!(
            parse_query("rbac=debug").unwrap(),
            [(Some("rbac"), "debug")]
        );
        assert_eq!(parse_query("level=info").unwrap(), [(None, "info")]);
        assert_eq!(
            parse_query("paths=rbac:trace,jwt:warning").unwrap(),
            [(Some("rbac"), "trace"), (Some("jwt"), "warning")]
        );
        assert!(parse_query("").unwrap().is_empty());
        let LoggingError::BadRequest(e) = parse_query("nope=debug").unwrap_err() else {
            panic!()
        };
        assert!(
            e.contains("unknown logger \"nope\"") && e.contains("rbac"),
            "{e}"
        );
        let LoggingError::BadRequest(e) = parse_query("rbac=loud").unwrap_err() else {
            panic!()
        };
        assert!(
            e.contains("unknown level \"loud\"") && e.contains("warning"),
            "{e}"
        );
    }

    #[test]
    fn directives_put_each_logger_on_its_targets() {
        let mut levels = BTreeMap::new();
        assert_eq!(directives("info", &levels), "info");
        levels.insert("rbac", "debug");
        assert_eq!(
            directives("info", &levels),
            "info,trustmesh_proxy::authz=debug"
        );
        levels.insert("misc", "critical");
        levels.insert("rbac", "warning");
        assert_eq!(
            directives("info", &levels),
            "error,trustmesh_proxy::authz=warn"
        );
        assert!(listing("warn", &BTreeMap::new()).contains("  rbac: warning\n"));
    }
}
