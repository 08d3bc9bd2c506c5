//! The seed's Event example: one process waits for a signal, another sends it.
//!
//! `cargo run --example event` runs both: it waits, and starts a copy of itself that
//! sets the event. To play the two roles yourself, in two terminals:
//!
//! ```text
//! cargo run --example event -- wait      # Process 1
//! cargo run --example event -- set       # Process 2 (or: touch /tmp/ready_signal)
//! ```

use std::process::Command;

use fileipc::Event;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join("ready_signal");
    match std::env::args().nth(1).as_deref() {
        Some("wait") => {
            wait(&path)?;
        }
        Some("set") => set(&path)?,
        None => {
            // Start from a cleared event, then run the sender as another process.
            Event::open(&path)?.clear()?;
            let mut sender = Command::new(std::env::current_exe()?).arg("set").spawn()?;
            let got = wait(&path)?;
            sender.wait()?;
            Event::open(&path)?.clear()?;
            if !got {
                std::process::exit(1);
            }
        }
        Some(other) => return Err(format!("unknown role {other:?}: use wait or set").into()),
    }
    Ok(())
}

/// Process 1: wait for the signal.
fn wait(path: &std::path::Path) -> fileipc::Result<bool> {
    let event = Event::open(path)?;
    println!("Waiting for signal...");
    let got = event.wait_timeout(std::time::Duration::from_millis(10_000))?;
    if got {
        println!("Got signal!");
    } else {
        println!("Timeout waiting for signal");
    }
    Ok(got)
}

/// Process 2: send the signal.
fn set(path: &std::path::Path) -> fileipc::Result<()> {
    let event = Event::open(path)?;
    event.set()?;
    println!("Signal sent!");
    Ok(())
}
