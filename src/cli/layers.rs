//! The layers under the command line: FERROCORN_* environment variables and the
//! `--config` TOML file. Both become ordinary command-line tokens placed before the
//! user's own, for the options the command line leaves unset, so clap checks their
//! values exactly as it checks typed ones and new options get both layers for free.
//!
//! Environment variables: `FERROCORN_<LONG_NAME>` (dashes as underscores), e.g.
//! `FERROCORN_PORT=9000`. A switch takes a boolean (`true/false`, `1/0`, `yes/no`,
//! `on/off`), under either of its names: `FERROCORN_ACCESS_LOG=false` and
//! `FERROCORN_NO_ACCESS_LOG=true` both mean `--no-access-log`. A repeatable option
//! (`--header`, `--bind`, `--env`) takes one value per line. Empty variables are unset.
//! Options clap already reads from a variable of their own (WEB_CONCURRENCY) keep it,
//! below FERROCORN_*; as with uvicorn, the --env-file may set that variable too.

use super::EXIT_USAGE;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, Command};
use std::collections::BTreeMap;

const PREFIX: &str = "FERROCORN_";

pub fn env_name(long: &str) -> String {
    format!("{PREFIX}{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// Name each option's variable at the end of its help text (`[env: FERROCORN_PORT]`).
/// Not clap's own `env`: clap would then read the variables itself, without the
/// switch pairs or the config file layer below them.
pub fn name_env_vars(cmd: Command) -> Command {
    cmd.mut_args(|a| {
        if a.is_hide_set() {
            return a;
        }
        let name = match a.get_long() {
            Some(long) => env_name(long),
            None if a.is_positional() => format!("{PREFIX}APP"),
            None => return a,
        };
        let help = a
            .get_long_help()
            .or(a.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        a.long_help(format!("{help}\n\n[env: {name}]"))
    })
}

pub enum LayerError {
    Clap(clap::Error),
    Usage(String),
}

impl LayerError {
    pub fn report(self) -> i32 {
        match self {
            LayerError::Clap(e) => print_clap_error(e, None),
            LayerError::Usage(message) => {
                eprintln!("error: {message}");
                EXIT_USAGE
            }
        }
    }
}

/// Where an option's value came from when not from the command line, by long name
/// ("port" -> "FERROCORN_PORT"), so an error names the variable or file.
pub type Sources = BTreeMap<String, String>;

/// The command line with the lower layers' tokens put in front of the user's.
pub fn resolve(cmd: &Command, argv: &[String]) -> Result<(Vec<String>, Sources), LayerError> {
    // The command line alone (APP may come from a lower layer): what the user typed,
    // --help and --version, and the --config path.
    let relaxed = cmd.clone().mut_arg("app", |a| a.required(false));
    let cli = relaxed.try_get_matches_from(argv).map_err(|e| {
        use clap::error::ErrorKind::{DisplayHelp, DisplayVersion};
        match e.kind() {
            // Printed by the real command, whose usage line has APP required.
            DisplayHelp | DisplayVersion => {
                LayerError::Clap(cmd.clone().try_get_matches_from(argv).err().unwrap_or(e))
            }
            _ => LayerError::Clap(e),
        }
    })?;
    let on_cli = |id: &str| cli.value_source(id) == Some(ValueSource::CommandLine);

    let config_path = if on_cli("config") {
        cli.get_one::<String>("config").cloned()
    } else {
        env_value(&env_name("config"))
    };
    let file = match &config_path {
        Some(path) => ConfigFile::load(cmd, path)?,
        None => ConfigFile::default(),
    };

    // The --env-file, wherever it is named, for the variables clap reads itself.
    let env_file_path = if on_cli("env_file") {
        cli.get_one::<String>("env_file").cloned()
    } else if let Some(path) = env_value(&env_name("env-file")) {
        Some(path)
    } else if let Some((toml::Value::String(path), _)) = file.values.get("env_file") {
        Some(path.clone())
    } else {
        None
    };
    // Unreadable or invalid: reported once the options are parsed (src/cli/review.rs).
    let env_file: BTreeMap<String, String> = env_file_path
        .as_deref()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| super::envfile::parse(&text, |n| std::env::var(n).ok()).ok())
        .unwrap_or_default()
        .into_iter()
        .collect();

    let mut tokens = vec![argv.first().cloned().unwrap_or_else(|| "ferrocorn".into())];
    let mut sources = Sources::new();
    if !on_cli("app") {
        let var = format!("{PREFIX}APP");
        if let Some(app) = env_value(&var) {
            tokens.push(app);
        } else if let Some((value, key)) = file.values.get("app") {
            match value {
                toml::Value::String(app) => tokens.push(app.clone()),
                _ => return Err(file.error(key, "expects a string")),
            }
        }
    }
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if arg.is_positional() || arg.is_hide_set() || id == "config" || is_negative(cmd, arg) {
            continue;
        }
        let Some(long) = arg.get_long() else { continue };
        let negative = negative_of(cmd, arg);
        let ids: Vec<&str> = std::iter::once(id)
            .chain(negative.map(|n| n.get_id().as_str()))
            .collect();
        if ids.iter().any(|id| on_cli(id)) {
            continue;
        }
        // The environment.
        let positive_var = env_name(long);
        let negative_var = negative.and_then(|n| n.get_long()).map(env_name);
        let from_env = [
            (positive_var.clone(), false),
            (negative_var.clone().unwrap_or_default(), true),
        ]
        .into_iter()
        .filter(|(var, _)| !var.is_empty())
        .filter_map(|(var, inverted)| env_value(&var).map(|v| (var, v, inverted)))
        .collect::<Vec<_>>();
        if from_env.len() > 1 {
            return Err(LayerError::Usage(format!(
                "{positive_var} and {} are both set; set one",
                negative_var.unwrap_or_default()
            )));
        }
        if let Some((var, value, inverted)) = from_env.into_iter().next() {
            let raw = Raw::Env(value);
            let new = tokens_for(arg, negative, &raw, inverted)
                .map_err(|e| LayerError::Usage(format!("{var}: {e}")))?;
            tokens.extend(new);
            sources.insert(long.to_string(), var);
            continue;
        }
        if arg
            .get_env()
            .and_then(std::env::var_os)
            .is_some_and(|v| !v.is_empty())
        {
            continue; // clap reads it (WEB_CONCURRENCY).
        }
        // uvicorn loads --env-file into its own environment before it reads
        // WEB_CONCURRENCY, so a .env may set the worker count; the same here.
        if let Some((var, value)) = arg
            .get_env()
            .and_then(|var| env_file.get(var.to_str()?).map(|v| (var, v)))
        {
            tokens.push(format!("--{long}={value}"));
            let path = env_file_path.as_deref().unwrap_or_default();
            sources.insert(
                long.to_string(),
                format!("{} in {path}", var.to_string_lossy()),
            );
            continue;
        }
        // The config file.
        for (i, id) in ids.iter().enumerate() {
            if let Some((value, key)) = file.values.get(*id) {
                let raw = Raw::Toml(value.clone());
                let new =
                    tokens_for(arg, negative, &raw, i == 1).map_err(|e| file.error(key, &e))?;
                tokens.extend(new);
                sources.insert(long.to_string(), format!("{key} in {}", file.path));
                break;
            }
        }
    }
    tokens.extend(argv.iter().skip(1).cloned());
    Ok((tokens, sources))
}

/// A clap error about a value that came from a lower layer names where it came from.
pub fn report_clap_error(e: clap::Error, sources: &Sources) -> i32 {
    use clap::error::{ContextKind, ContextValue};
    if let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) {
        let long = arg
            .trim_start_matches('-')
            .split([' ', '=', '<'])
            .next()
            .unwrap_or("");
        if let Some(source) = sources.get(long) {
            return print_clap_error(e, Some(source));
        }
    }
    print_clap_error(e, None)
}

/// Help and the version as clap prints them; an error as one line (clap's first, with
/// its tip if it has one), prefixed by where a value came from when not typed.
fn print_clap_error(e: clap::Error, source: Option<&str>) -> i32 {
    use clap::error::ErrorKind::{DisplayHelp, DisplayVersion};
    if matches!(e.kind(), DisplayHelp | DisplayVersion) {
        let _ = e.print();
        return e.exit_code();
    }
    let text = e.to_string();
    // The first paragraph ("... were not provided:\n  <APP>") on one line.
    let mut line = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
        .trim_start_matches("error: ")
        .to_string();
    if let Some(tip) = text.lines().find_map(|l| l.trim().strip_prefix("tip: ")) {
        line = format!("{line} ({tip})");
    }
    match source {
        Some(source) => eprintln!("error: {source}: {line}"),
        None => eprintln!("error: {line}"),
    }
    e.exit_code()
}

fn env_value(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

/// `--no-x` of a `--x`/`--no-x` pair of switches.
fn is_negative(cmd: &Command, arg: &Arg) -> bool {
    let id = arg.get_id().as_str();
    id.strip_prefix("no_").is_some_and(|positive| {
        is_switch(arg)
            && cmd
                .get_arguments()
                .any(|a| a.get_id() == positive && is_switch(a))
    })
}

fn negative_of<'a>(cmd: &'a Command, arg: &Arg) -> Option<&'a Arg> {
    if !is_switch(arg) {
        return None;
    }
    let negative = format!("no_{}", arg.get_id());
    cmd.get_arguments()
        .find(|a| a.get_id() == negative.as_str() && is_switch(a))
}

fn is_switch(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue)
}

enum Raw {
    Env(String),
    Toml(toml::Value),
}

pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "t" | "y" => Some(true),
        "false" | "0" | "no" | "off" | "f" | "n" => Some(false),
        _ => None,
    }
}

/// The tokens that say what `raw` says for `arg` (`inverted`: given under the `no-`
/// name of a switch pair).
fn tokens_for(
    arg: &Arg,
    negative: Option<&Arg>,
    raw: &Raw,
    inverted: bool,
) -> Result<Vec<String>, String> {
    let long = arg.get_long().expect("only long options are layered");
    match arg.get_action() {
        ArgAction::SetTrue => {
            let on = match raw {
                Raw::Env(text) => parse_bool(text),
                Raw::Toml(toml::Value::Boolean(b)) => Some(*b),
                Raw::Toml(toml::Value::String(text)) => parse_bool(text),
                Raw::Toml(_) => None,
            }
            .ok_or("expects true or false")?;
            Ok(match (on != inverted, negative.and_then(Arg::get_long)) {
                (true, _) => vec![format!("--{long}")],
                (false, Some(no)) => vec![format!("--{no}")],
                (false, None) => vec![],
            })
        }
        ArgAction::Append => {
            let items: Vec<String> = match raw {
                Raw::Env(text) => text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect(),
                Raw::Toml(toml::Value::Array(items)) => {
                    items.iter().map(scalar).collect::<Result<_, _>>()?
                }
                Raw::Toml(value) => vec![scalar(value)?],
            };
            Ok(items.iter().map(|v| format!("--{long}={v}")).collect())
        }
        _ => {
            let value = match raw {
                Raw::Env(text) => text.clone(),
                Raw::Toml(value) => scalar(value)?,
            };
            Ok(vec![format!("--{long}={value}")])
        }
    }
}

fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err("expects a single value (a string, number or boolean)".into()),
    }
}

/// A `--config` file's options, by option id (field name), each with its key as written.
#[derive(Default)]
struct ConfigFile {
    path: String,
    values: BTreeMap<String, (toml::Value, String)>,
}

impl ConfigFile {
    fn load(cmd: &Command, path: &str) -> Result<ConfigFile, LayerError> {
        let usage = |m: String| LayerError::Usage(format!("--config {path}: {m}"));
        if path.ends_with(".py") || path.starts_with("python:") || path.starts_with("file:") {
            return Err(usage(
                "a Python config file (gunicorn's or hypercorn's); ferrocorn reads a TOML file \
                 of its own options (docs/migrating.md, \"gunicorn.conf.py settings\")"
                    .into(),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| usage(e.to_string()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| usage(format!("invalid TOML: {}", e.message().trim())))?;
        let mut values = BTreeMap::new();
        for (key, value) in table {
            let name = key.replace('-', "_");
            let id = if name == "app" {
                Some("app".to_string())
            } else if name == "config" {
                return Err(usage("'config' cannot be set inside a config file".into()));
            } else {
                find_option(cmd, &name)
            };
            let Some(id) = id else {
                return Err(usage(format!("unknown option '{key}'")));
            };
            values.insert(id, (value, key));
        }
        Ok(ConfigFile {
            path: path.to_string(),
            values,
        })
    }

    fn error(&self, key: &str, message: &str) -> LayerError {
        LayerError::Usage(format!("--config {}: {key}: {message}", self.path))
    }
}

/// The id of the option named `name` (underscores), by its long name or an alias.
fn find_option(cmd: &Command, name: &str) -> Option<String> {
    let dashed = name.replace('_', "-");
    cmd.get_arguments()
        .filter(|a| !a.is_positional() && !a.is_hide_set())
        .find(|a| {
            a.get_long() == Some(dashed.as_str())
                || a.get_all_aliases()
                    .is_some_and(|aliases| aliases.contains(&dashed.as_str()))
        })
        .map(|a| a.get_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(id: &str, raw: Raw, inverted: bool) -> Result<Vec<String>, String> {
        let cmd = super::super::command();
        let arg = cmd.get_arguments().find(|a| a.get_id() == id).unwrap();
        tokens_for(arg, negative_of(&cmd, arg), &raw, inverted)
    }

    #[test]
    fn switches_take_a_boolean_under_either_name() {
        let env = |s: &str| Raw::Env(s.into());
        assert_eq!(
            tokens("access_log", env("false"), false).unwrap(),
            ["--no-access-log"]
        );
        assert_eq!(
            tokens("access_log", env("on"), false).unwrap(),
            ["--access-log"]
        );
        // FERROCORN_NO_ACCESS_LOG=true and =false.
        assert_eq!(
            tokens("access_log", env("1"), true).unwrap(),
            ["--no-access-log"]
        );
        assert_eq!(
            tokens("access_log", env("no"), true).unwrap(),
            ["--access-log"]
        );
        // A switch without a --no- form: false is its absence.
        assert_eq!(
            tokens("factory", env("false"), false).unwrap(),
            Vec::<String>::new()
        );
        let bad = tokens("factory", env("maybe"), false).unwrap_err();
        assert_eq!(bad, "expects true or false");
    }

    #[test]
    fn values_and_lists() {
        let port = Raw::Toml(toml::Value::Integer(9000));
        assert_eq!(tokens("port", port, false).unwrap(), ["--port=9000"]);
        let lines = Raw::Env("X-A: 1\n\n  X-B: 2\n".into());
        assert_eq!(
            tokens("header", lines, false).unwrap(),
            ["--header=X-A: 1", "--header=X-B: 2"]
        );
        let array = Raw::Toml(toml::Value::Array(vec!["a:1".into(), "b:2".into()]));
        assert_eq!(
            tokens("bind", array, false).unwrap(),
            ["--bind=a:1", "--bind=b:2"]
        );
        let nested = Raw::Toml(toml::Value::Array(vec![]));
        assert!(tokens("port", nested, false).is_err());
    }

    #[test]
    fn variable_names() {
        assert_eq!(env_name("ws-max-size"), "FERROCORN_WS_MAX_SIZE");
        assert_eq!(env_name("no-access-log"), "FERROCORN_NO_ACCESS_LOG");
    }
}
