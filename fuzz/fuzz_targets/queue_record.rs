//! A queue record header and payload at a log position: decoding never panics, and a
//! header that validates at one position does not validate at another.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let pos = u64::from_le_bytes(data[..8].try_into().unwrap()) & !7;
    let rec = &data[8..];
    if let Some((len, _seq, ok)) = fileipc::__fuzz::queue_record(rec, pos) {
        assert!(!ok || rec.len() - 32 == len as usize);
        assert!(fileipc::__fuzz::queue_record(rec, pos ^ 8).is_none());
    }
});
