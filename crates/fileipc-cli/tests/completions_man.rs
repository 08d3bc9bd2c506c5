//! `fileipc completions SHELL` and `fileipc man [DIR]`, through the real binary: the
//! scripts complete subcommands and options in a real bash, and the pages cover every
//! visible command and no hidden one.

use std::process::{Command, Output, Stdio};

fn fileipc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fileipc"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[track_caller]
fn ok(o: Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn completion_scripts_for_each_shell() {
    assert!(ok(fileipc(&["completions", "zsh"])).starts_with("#compdef fileipc"));
    let fish = ok(fileipc(&["completions", "fish"]));
    assert!(fish.contains("complete -c fileipc"), "{fish}");
    assert!(fish.contains("durable"), "{fish}");
    let o = fileipc(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
}

/// What bash's completion of `WORDS` (the last one being completed) offers.
fn bash_completes(script: &std::path::Path, words: &[&str]) -> String {
    let cword = words.len() - 1;
    let prev = if cword > 0 { words[cword - 1] } else { "" };
    let program = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={cword}; _fileipc fileipc '{}' '{prev}'; \
         echo \"${{COMPREPLY[*]}}\"",
        script.display(),
        words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" "),
        words[cword],
    );
    let o = Command::new("bash")
        .args(["-c", &program])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

#[test]
fn bash_completes_subcommands_and_options() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("fileipc.bash");
    std::fs::write(&script, ok(fileipc(&["completions", "bash"]))).unwrap();
    assert_eq!(bash_completes(&script, &["fileipc", "que"]), "queue");
    assert_eq!(bash_completes(&script, &["fileipc", "queue", "se"]), "send");
    assert_eq!(
        bash_completes(&script, &["fileipc", "queue", "send", "/tmp/q", "--du"]),
        "--durable"
    );
    assert_eq!(
        bash_completes(&script, &["fileipc", "event", "wait", "/tmp/e", "--tim"]),
        "--timeout"
    );
    // Hidden internal subcommands are not offered.
    assert_eq!(bash_completes(&script, &["fileipc", "__"]), "");
}

#[test]
fn manual_pages() {
    let page = ok(fileipc(&["man"]));
    assert!(page.contains(".TH fileipc 1"), "{page}");
    assert!(page.contains("queue"), "{page}");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let listed = ok(fileipc(&["man", out.to_str().unwrap()]));
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(listed.lines().count(), names.len(), "{listed}");
    for want in [
        "fileipc.1",
        "fileipc-queue.1",
        "fileipc-queue-send.1",
        "fileipc-sem-run.1",
        "fileipc-kv-get.1",
        "fileipc-event-wait.1",
        "fileipc-completions.1",
        "fileipc-man.1",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    assert!(
        names.iter().all(|n| !n.contains("__") && n.ends_with(".1")),
        "{names:?}"
    );
    let send = std::fs::read_to_string(out.join("fileipc-queue-send.1")).unwrap();
    assert!(
        send.contains("framed") && send.contains("Examples"),
        "{send}"
    );
}
