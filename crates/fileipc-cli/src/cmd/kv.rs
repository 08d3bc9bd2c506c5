//! `fileipc kv ...`

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use fileipc::SharedData;
use serde_json::Value;

use super::Usage;

/// How a command that may create the store opens it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Create {
    /// Permission bits of the files created (`None`: the library's default).
    pub(crate) mode: Option<u32>,
    /// Whether each commit is synced to stable storage.
    pub(crate) durable: bool,
}

fn open(path: &Path, create: Create) -> fileipc::Result<SharedData> {
    let options = SharedData::options().durable(create.durable);
    match create.mode {
        Some(mode) => options.mode(mode).open(path),
        None => options.open(path),
    }
}

/// Prints the value of `key`: as JSON, or with `raw` a string as its bare text.
pub(crate) fn get(path: &Path, key: &str, raw: bool) -> anyhow::Result<ExitCode> {
    match SharedData::open_existing(path)?.get::<Value>(key)? {
        Some(Value::String(text)) if raw => {
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Some(v) => {
            println!("{v}");
            Ok(ExitCode::SUCCESS)
        }
        None => Ok(crate::NO),
    }
}

/// Sets `key` to `arg` (JSON; with `raw`, a string as given); `-` reads standard input,
/// whole and exactly (no newline is removed).
pub(crate) fn set(
    path: &Path,
    key: &str,
    arg: &str,
    raw: bool,
    create: Create,
) -> anyhow::Result<ExitCode> {
    let input;
    let text = if arg == "-" {
        let mut bytes = Vec::new();
        std::io::stdin().lock().read_to_end(&mut bytes)?;
        input = String::from_utf8(bytes).map_err(|_| {
            Usage(
                "standard input is not UTF-8 text: kv values are JSON, whose strings are \
                 text (send bytes through a queue with --framed, or encode them)"
                    .into(),
            )
        })?;
        input.as_str()
    } else {
        arg
    };
    if raw {
        open(path, create)?.set(key, &Value::String(text.to_owned()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let json = text;
    let value: Value = serde_json::from_str(json).map_err(|e| {
        Usage(format!(
            "{json:?} is not JSON ({e}); a string needs its quotes, e.g. '\"text\"'"
        ))
    })?;
    if let Some(n) = inexact_integer(json) {
        return Err(Usage(format!(
            "the integer {n} is outside the 64-bit range (-2^63 to 2^64-1) and would be \
             stored rounded to a float; store it as a string, e.g. '\"{n}\"'"
        ))
        .into());
    }
    open(path, create)?.set(key, &value)?;
    Ok(ExitCode::SUCCESS)
}

/// The first integer literal of the JSON text `json` (already parsed, so valid) that
/// fits neither i64 nor u64: serde_json would read it as the nearest double.
fn inexact_integer(json: &str) -> Option<&str> {
    let b = json.as_bytes();
    let (mut i, mut in_string) = (0, false);
    while i < b.len() {
        let c = b[i];
        if in_string {
            match c {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
        } else if c == b'"' {
            in_string = true;
            i += 1;
        } else if c == b'-' || c.is_ascii_digit() {
            let start = i;
            while i < b.len() && matches!(b[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                i += 1;
            }
            let n = &json[start..i];
            let integer = !n.contains(['.', 'e', 'E']);
            if integer && n.parse::<i64>().is_err() && n.parse::<u64>().is_err() {
                return Some(n);
            }
        } else {
            i += 1;
        }
    }
    None
}

pub(crate) fn delete(path: &Path, key: &str) -> anyhow::Result<ExitCode> {
    Ok(crate::yes(SharedData::open(path)?.delete(key)?))
}

pub(crate) fn incr(path: &Path, key: &str, delta: i64, create: Create) -> anyhow::Result<ExitCode> {
    println!("{}", open(path, create)?.increment(key, delta)?);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn keys(path: &Path) -> anyhow::Result<ExitCode> {
    for k in SharedData::open_existing(path)?.keys()? {
        println!("{k}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn clear(path: &Path) -> anyhow::Result<ExitCode> {
    SharedData::open(path)?.clear()?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn dump(path: &Path) -> anyhow::Result<ExitCode> {
    println!(
        "{}",
        serde_json::Value::from(SharedData::open_existing(path)?.dump()?)
    );
    Ok(ExitCode::SUCCESS)
}
