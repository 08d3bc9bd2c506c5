//! Record headers of the queue log (pure encoding, no I/O).
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `b"FQR1"` |
//! | 4 | 4 | state flags (0 in version 1; reserved for claim/ack and quarantine) |
//! | 8 | 4 | payload length |
//! | 12 | 4 | CRC-32 of the payload |
//! | 16 | 8 | sequence number (the queue's `sent` count before this record) |
//! | 24 | 4 | CRC-32 of bytes 0..4 and 8..24 followed by the record's log position (u64) |
//! | 28 | 4 | deliveries before dead-lettering (0 for a message sent by `send`); not covered by the header checksum |
//!
//! The payload follows, then zero to seven bytes of padding up to a multiple of 8.

/// Bytes of a record header.
pub(crate) const HEADER: usize = 32;
pub(crate) const MAGIC: [u8; 4] = *b"FQR1";

/// Flag bits in the state word (bytes 4..8). Version 1 writes 0 and ignores them; they
/// are outside the header checksum so that a later version can change them in place.
#[allow(dead_code)]
pub(crate) mod flags {
    /// A consumer leased the record (claim/ack mode, future).
    pub(crate) const CLAIMED: u32 = 1;
    /// The lease was acknowledged (claim/ack mode, future).
    pub(crate) const ACKED: u32 = 2;
    /// The record failed its checksum and was copied to quarantine (future).
    pub(crate) const QUARANTINED: u32 = 4;
}

/// A decoded, checksum-verified record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) len: u32,
    pub(crate) payload_crc: u32,
    pub(crate) seq: u64,
    /// In a dead-letter queue: how many deliveries the message had before it was moved
    /// there; 0 otherwise.
    pub(crate) deliveries: u32,
}

/// Bytes a record with a payload of `len` bytes occupies in the log, padding included.
pub(crate) fn record_size(len: usize) -> u64 {
    (HEADER as u64 + len as u64 + 7) & !7
}

fn header_crc(b: &[u8; HEADER], pos: u64) -> u32 {
    // One contiguous buffer: a single checksum call is cheaper than three updates of a
    // hasher (the same CRC: CRC-32 of the concatenation).
    let mut covered = [0u8; 28];
    covered[0..4].copy_from_slice(&b[0..4]);
    covered[4..20].copy_from_slice(&b[8..24]);
    covered[20..28].copy_from_slice(&pos.to_le_bytes());
    crc32fast::hash(&covered)
}

impl Header {
    /// A header for `payload` (the send path builds it from a precomputed checksum).
    #[cfg(test)]
    pub(crate) fn for_payload(payload: &[u8], seq: u64) -> Header {
        Header {
            len: payload.len() as u32,
            payload_crc: crc32fast::hash(payload),
            seq,
            deliveries: 0,
        }
    }

    /// The 32 header bytes of this record at log position `pos`.
    pub(crate) fn encode(&self, pos: u64) -> [u8; HEADER] {
        let mut b = [0u8; HEADER];
        b[0..4].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..16].copy_from_slice(&self.payload_crc.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        let crc = header_crc(&b, pos);
        b[24..28].copy_from_slice(&crc.to_le_bytes());
        b[28..32].copy_from_slice(&self.deliveries.to_le_bytes());
        b
    }

    /// Decodes header bytes read at log position `pos`; `None` unless the magic and the
    /// header checksum (which covers the position) are right.
    pub(crate) fn decode(b: &[u8; HEADER], pos: u64) -> Option<Header> {
        if b[0..4] != MAGIC {
            return None;
        }
        let le32 =
            |r: std::ops::Range<usize>| u32::from_le_bytes(b[r].try_into().unwrap_or([0; 4]));
        if le32(24..28) != header_crc(b, pos) {
            return None;
        }
        Some(Header {
            len: le32(8..12),
            payload_crc: le32(12..16),
            seq: u64::from_le_bytes(b[16..24].try_into().unwrap_or([0; 8])),
            deliveries: le32(28..32),
        })
    }

    /// Whether `payload` matches the checksum in this header.
    pub(crate) fn payload_ok(&self, payload: &[u8]) -> bool {
        payload.len() == self.len as usize && crc32fast::hash(payload) == self.payload_crc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for (payload, pos, seq) in [
            (&b""[..], 0u64, 0u64),
            (&b"x"[..], 8, 1),
            (&b"hello\0\xff world"[..], 1 << 40, u64::MAX),
        ] {
            let h = Header::for_payload(payload, seq);
            let b = h.encode(pos);
            assert_eq!(&b[0..4], b"FQR1");
            assert_eq!(Header::decode(&b, pos), Some(h));
            assert!(h.payload_ok(payload));
            assert_eq!(h.len as usize, payload.len());
        }
    }

    #[test]
    fn header_checksum_is_the_documented_concatenation() {
        let h = Header::for_payload(b"abc", 5);
        let b = h.encode(4096);
        let mut c = crc32fast::Hasher::new();
        c.update(&b[0..4]);
        c.update(&b[8..24]);
        c.update(&4096u64.to_le_bytes());
        assert_eq!(
            u32::from_le_bytes(b[24..28].try_into().unwrap()),
            c.finalize()
        );
    }

    #[test]
    fn sizes_are_aligned() {
        assert_eq!(record_size(0), 32);
        assert_eq!(record_size(1), 40);
        assert_eq!(record_size(8), 40);
        assert_eq!(record_size(9), 48);
        assert_eq!(record_size(64), 96);
        for n in 0..100 {
            assert_eq!(record_size(n) % 8, 0);
            assert!(record_size(n) >= (HEADER + n) as u64);
        }
    }

    #[test]
    fn damage_is_detected() {
        let h = Header::for_payload(b"payload", 7);
        let b = h.encode(64);
        // At another position the same bytes are not a valid header.
        assert_eq!(Header::decode(&b, 72), None);
        // Any flipped bit in the covered bytes is caught.
        for i in (0..4).chain(8..28) {
            for bit in 0..8 {
                let mut c = b;
                c[i] ^= 1 << bit;
                assert_eq!(Header::decode(&c, 64), None, "byte {i} bit {bit}");
            }
        }
        // The state flags are outside the checksum.
        let mut c = b;
        c[4] = flags::CLAIMED as u8;
        assert_eq!(Header::decode(&c, 64), Some(h));
        // A damaged payload fails its checksum.
        assert!(!h.payload_ok(b"paylaod"));
        assert!(!h.payload_ok(b"payload!"));
        // Zeros (a sparse, never written region) are not a header.
        assert_eq!(Header::decode(&[0; HEADER], 0), None);
    }
}
