//! Library errors as Python exceptions: [`to_py`] builds them with
//! `fileipc._errors.make`, which picks the class (see python/fileipc/_errors.py).

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The Python exception for `e`: an instance of a `fileipc.Error` subclass carrying
/// `.path` (and `.errno`, `.offset`, `.completed` where they apply).
pub(crate) fn to_py(e: fileipc::Error) -> PyErr {
    Python::attach(|py| match build(py, &e) {
        Ok(err) => err,
        Err(import_failed) => import_failed,
    })
}

fn build(py: Python<'_>, e: &fileipc::Error) -> PyResult<PyErr> {
    let extra = PyDict::new(py);
    let kind = classify(e, &extra)?;
    let make = py.import("fileipc._errors")?.getattr("make")?;
    let path = e.path().as_os_str();
    let value = make.call1((kind, e.to_string(), path, extra))?;
    Ok(PyErr::from_value(value))
}

/// The name of the case `fileipc._errors.make` maps to a class; fills `extra` with the
/// attributes of that case.
fn classify(e: &fileipc::Error, extra: &Bound<'_, PyDict>) -> PyResult<&'static str> {
    use fileipc::Error as E;
    Ok(match e {
        E::Io { source, op, .. } => {
            extra.set_item("errno", source.raw_os_error())?;
            extra.set_item("op", *op)?;
            match source.kind() {
                std::io::ErrorKind::PermissionDenied => "permission",
                std::io::ErrorKind::NotFound => "notfound",
                _ => "io",
            }
        }
        E::Symlink { .. } => "symlink",
        E::Format { expected, .. } => {
            extra.set_item("expected", *expected)?;
            "format"
        }
        E::Corrupt { offset, .. } => {
            extra.set_item("offset", *offset)?;
            "corrupt"
        }
        E::Invalid { .. } => "invalid",
        E::Destroyed { .. } => "destroyed",
        E::Value { key, .. } => {
            extra.set_item("key", key.as_str())?;
            "value"
        }
        E::Sqlite { .. } => "sqlite",
        E::Partial {
            completed, source, ..
        } => {
            extra.set_item("completed", *completed)?;
            classify(source, extra)?
        }
        _ => "other",
    })
}
