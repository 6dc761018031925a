//! The one config toolkit every trustmesh binary reads its files and flags through.
//!
//! Before this crate, five parsers accepted five duration grammars, so `policy validate` could
//! accept an ext_authz `timeout` that the proxy then refused, and each config file reported
//! errors its own way. Now:
//!
//! - [`Duration`] is the one duration type: Go's `time.ParseDuration` grammar (`500ms`, `90s`,
//!   `1h30m`), which is what Istio accepts in its config and CRD fields, printed the way Go
//!   prints it (`1h30m0s`). Negative durations are refused. [`LegacyDuration`] is the explicit
//!   deprecated path for fields and flags that used to take bare seconds (`90`) or days (`7d`).
//! - [`load`] reads a YAML file into a raw struct with errors that name the file and the field
//!   path (`agent.yaml: ca.rootCert: ...`); the caller then converts the raw struct into its
//!   typed config.
//! - [`watch`] finds out that files changed (a bounded walk and a metadata fingerprint), for
//!   the sidecar's reload and the control plane's source alike.
//! - [`Deprecations`] collects old spellings met on the way (snake_case keys, `…Ms` integer
//!   fields, bare-second values), each with its replacement, so they are logged once at load
//!   and can be printed by a check command.
//!
//! Keys are camelCase, as in Istio's configuration. This crate depends on no other trustmesh
//! crate; every crate may depend on it.

pub mod deprecation;
pub mod duration;
pub mod load;
pub mod watch;

pub use deprecation::{Deprecation, Deprecations};
pub use duration::{format_go, Duration, DurationError, LegacyDuration};
pub use load::ConfigError;
