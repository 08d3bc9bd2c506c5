//! `fileipc kv ...`

use std::path::Path;
use std::process::ExitCode;

use fileipc::SharedData;
use serde_json::Value;

use super::Usage;

pub(crate) fn get(path: &Path, key: &str) -> anyhow::Result<ExitCode> {
    match SharedData::open(path)?.get::<Value>(key)? {
        Some(v) => {
            println!("{v}");
            Ok(ExitCode::SUCCESS)
        }
        None => Ok(crate::NO),
    }
}

pub(crate) fn set(path: &Path, key: &str, json: &str) -> anyhow::Result<ExitCode> {
    let value: Value = serde_json::from_str(json).map_err(|e| {
        Usage(format!(
            "{json:?} is not JSON ({e}); a string needs its quotes, e.g. '\"text\"'"
        ))
    })?;
    SharedData::open(path)?.set(key, &value)?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn delete(path: &Path, key: &str) -> anyhow::Result<ExitCode> {
    Ok(crate::yes(SharedData::open(path)?.delete(key)?))
}

pub(crate) fn incr(path: &Path, key: &str, delta: i64) -> anyhow::Result<ExitCode> {
    println!("{}", SharedData::open(path)?.increment(key, delta)?);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn keys(path: &Path) -> anyhow::Result<ExitCode> {
    for k in SharedData::open(path)?.keys()? {
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
        serde_json::Value::from(SharedData::open(path)?.dump()?)
    );
    Ok(ExitCode::SUCCESS)
}
