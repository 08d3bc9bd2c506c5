//! SharedData integrity (issue 19): values round-trip exactly, values JSON cannot hold are
//! refused.

mod common;

use fileipc::{Error, SharedData};

/// xorshift64*: deterministic doubles without a dependency.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        // 53 random bits: a uniform double in [0, 1).
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn random_doubles_round_trip_exactly() {
    let dir = common::tempdir();
    let d = SharedData::open(dir.path().join("floats")).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut wrong_get, mut failed_cas) = (0, 0);
    let mut first_bad = None;
    for _ in 0..10_000 {
        let x = rng.next_f64();
        d.set("f", &x).unwrap();
        let back: f64 = d.get("f").unwrap().unwrap();
        if back.to_bits() != x.to_bits() {
            wrong_get += 1;
            first_bad.get_or_insert((x, back));
        }
        if !d.compare_and_swap("f", Some(&x), &0.5).unwrap() {
            failed_cas += 1;
        }
    }
    assert_eq!(
        (wrong_get, failed_cas),
        (0, 0),
        "of 10000 doubles, {wrong_get} read back different and {failed_cas} compare_and_swap \
         failed (first: {first_bad:?})"
    );
}

#[test]
fn non_finite_floats_are_refused() {
    let dir = common::tempdir();
    let path = dir.path().join("nan");
    let d = SharedData::open(&path).unwrap();
    d.set("f", &1.5).unwrap();
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        match d.set("f", &bad) {
            Err(Error::Value { key, detail, .. }) => {
                assert_eq!(key, "f");
                assert!(detail.contains("finite"), "{detail}");
            }
            other => panic!("set({bad}) gave {other:?}"),
        }
        assert!(d.set("g", &vec![1.0, bad]).is_err(), "nested {bad}");
        assert!(
            d.update("f", |_: Option<f64>| Some(bad)).is_err(),
            "update to {bad}"
        );
        assert!(
            d.compare_and_swap("f", Some(&1.5), &bad).is_err(),
            "CAS to {bad}"
        );
        assert!(
            d.compare_and_swap("f", Some(&bad), &2.0).is_err(),
            "CAS from {bad}"
        );
        assert!(
            d.transaction(|tx| tx.set("f", &bad)).is_err(),
            "transaction set {bad}"
        );
        assert_eq!(d.get::<f64>("f").unwrap(), Some(1.5), "after {bad}");
        assert_eq!(d.get::<f64>("g").unwrap(), None);
    }
    // null itself is still a value.
    d.set("n", &None::<f64>).unwrap();
    d.set("u", &()).unwrap();
    assert_eq!(d.get::<Option<f64>>("n").unwrap(), Some(None));
}
