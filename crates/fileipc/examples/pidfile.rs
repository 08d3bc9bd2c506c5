//! The seed's PidFile examples, with "Single Instance Application".
//!
//! `cargo run --example pidfile` starts the application, then starts a second copy of
//! itself while the first still runs: the second finds the PID file owned and exits with
//! "already running". Run `cargo run --example pidfile -- app` in two terminals to see the
//! same by hand (the first instance runs for 30 seconds; Ctrl-C or kill -9 it and the next
//! start takes the stale file over).

use std::process::{Command, Stdio};
use std::time::Duration;

use fileipc::{Event, PidFile};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir();
    let pid_path = dir.join("myapp.pid");
    let stop_path = dir.join("myapp.stop");
    match std::env::args().nth(1).as_deref() {
        Some("app") => app(&pid_path, &stop_path, Duration::from_secs(30)),
        None => {
            Event::open(&stop_path)?.clear()?;
            // The first instance: it says when it has started.
            let mut first = Command::new(std::env::current_exe()?)
                .arg("app")
                .stdout(Stdio::piped())
                .spawn()?;
            let mut out = std::io::BufReader::new(first.stdout.take().ok_or("no stdout")?);
            let mut line = String::new();
            std::io::BufRead::read_line(&mut out, &mut line)?;
            print!("first:  {line}");
            // The second instance, while the first runs.
            let second = Command::new(std::env::current_exe()?).arg("app").output()?;
            print!("second: {}", String::from_utf8_lossy(&second.stdout));
            println!("second exited with {}", second.status);
            // Stop the first one; it removes its PID file on the way out.
            Event::open(&stop_path)?.set()?;
            first.wait()?;
            Event::open(&stop_path)?.clear()?;
            println!(
                "PID file after the first exited: {:?}",
                PidFile::open(&pid_path)?.read()?
            );
            Ok(())
        }
        Some(other) => Err(format!("unknown role {other:?}: use app").into()),
    }
}

/// The "Single Instance Application" of the seed.
fn app(
    pid_path: &std::path::Path,
    stop_path: &std::path::Path,
    run_for: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut pid_file = PidFile::open(pid_path)?;

    if !pid_file.create()? {
        let existing_pid = pid_file.read()?;
        match existing_pid {
            Some(pid) => println!("Error: Application already running with PID {pid}"),
            None => println!("Error: Application already running"),
        }
        std::process::exit(1);
    }

    println!("Application started with PID {}", std::process::id());

    // Main application logic: here, wait until told to stop (or for `run_for`).
    Event::open(stop_path)?.wait_timeout(run_for)?;

    // Cleanup (dropping `pid_file` would do it too).
    pid_file.remove()?;
    Ok(())
}
