//! PID file content: parsing never panics, and what parses names a positive PID.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(pid)) = fileipc::__fuzz::pid_file(data) {
        assert!(pid > 0 && pid <= i32::MAX as u32);
    }
});
