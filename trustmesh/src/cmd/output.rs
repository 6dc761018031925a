//! `-o text|json|yaml`, the one output flag of every command that prints a result.
//!
//! Text is for a person; JSON and YAML are the same document for scripts (YAML because
//! operators keep Istio's YAML and pipe through `yq`). A command builds one `serde` value for
//! its result and prints it with [`print`]; in text mode it prints its own table instead.
//! Exit codes are the command's own and documented in its `--help` (docs/cli.md lists them
//! all): 0 success, 1 the result is a "no" (a problem found, out of sync, not ready), 2 the
//! command could not do its job (bad input, unreachable).

use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For a person (the default).
    #[default]
    Text,
    Json,
    Yaml,
}

/// The flag, to flatten into a command's arguments.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct OutputArg {
    /// Output format: text for a person, json or yaml for scripts.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Prints `value` as JSON or YAML and returns true; returns false in text mode, where the
/// caller prints its own text.
pub fn print(format: Format, value: &impl Serialize) -> bool {
    match format {
        Format::Text => false,
        Format::Json => {
            match serde_json::to_string_pretty(value) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("error: cannot render the result as JSON: {e}"),
            }
            true
        }
        Format::Yaml => {
            match serde_yaml::to_string(value) {
                Ok(s) => print!("{s}"),
                Err(e) => eprintln!("error: cannot render the result as YAML: {e}"),
            }
            true
        }
    }
}
