//! A seeded never-panics loop: 20 000 pseudo-random byte strings plus mutations of the valid corpus go through
//! the filter parser, the PATCH path parser, `Display` and the evaluator under `catch_unwind`.

use std::panic::catch_unwind;

use kubehero_scim::{matches, Filter, PatchPath};
use serde_json::json;

use crate::filter_valid::VALID;

/// xorshift64* (Vigna); deterministic, no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }
}

/// Bytes a filter is made of, so random strings reach deep into the grammar; plus some that are not.
const ALPHABET: &[u8] = b"()[]\"\\ .:$-_aenotrpwqsglcu019eEu\t\n\x00\x7f\xc3\xa9\xff";
const WORDS: &[&str] = &[" and ", " or ", "not (", " eq ", " pr", "\"", "\\u", "\\ud800", "[", "]", ")", "(", ".", ":"];

fn random_input(rng: &mut XorShift) -> String {
    let len = rng.below(64);
    let mut bytes = Vec::with_capacity(len);
    for _ in 0..len {
        if rng.below(4) == 0 {
            bytes.push(u8::try_from(rng.next() & 0xff).unwrap_or(0));
        } else {
            bytes.push(ALPHABET[rng.below(ALPHABET.len())]);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn mutate(rng: &mut XorShift, input: &str) -> String {
    let mut chars: Vec<char> = input.chars().collect();
    for _ in 0..=rng.below(4) {
        let at = rng.below(chars.len() + 1);
        match rng.below(5) {
            0 if !chars.is_empty() => {
                chars.remove(at.min(chars.len() - 1));
            }
            1 => chars.insert(at, char::from(ALPHABET[rng.below(ALPHABET.len())])),
            2 => {
                let word = WORDS[rng.below(WORDS.len())];
                for (i, c) in word.chars().enumerate() {
                    chars.insert(at + i, c);
                }
            }
            3 => chars.truncate(at),
            _ => {
                let tail: Vec<char> = chars.get(at..).unwrap_or(&[]).to_vec();
                chars.extend(tail);
            }
        }
    }
    chars.into_iter().collect()
}

fn exercise(input: &str) -> (bool, bool) {
    let resource = json!({"userName": "a", "emails": [{"value": "x", "type": "work"}], "name": {"givenName": "b"}});
    let filter_ok = match Filter::parse(input) {
        Ok(filter) => {
            let printed = filter.to_string();
            assert_eq!(Filter::parse(&printed).as_ref(), Ok(&filter), "round trip of {input:?} via {printed:?}");
            let _ = matches(&filter, &resource);
            true
        }
        Err(err) => {
            assert!(err.position <= input.len().max(kubehero_scim::filter::MAX_FILTER_LEN));
            false
        }
    };
    let path_ok = match PatchPath::parse(input) {
        Ok(path) => {
            assert_eq!(PatchPath::parse(&path.to_string()).as_ref(), Ok(&path), "round trip of path {input:?}");
            true
        }
        Err(_) => false,
    };
    (filter_ok, path_ok)
}

#[test]
fn parsers_never_panic_on_random_or_mutated_input() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut inputs: Vec<String> = (0..20_000).map(|_| random_input(&mut rng)).collect();
    for round in 0..100 {
        for (valid, _) in VALID {
            if round == 0 {
                inputs.push((*valid).to_owned());
            }
            inputs.push(mutate(&mut rng, valid));
        }
    }
    let mut parsed = 0usize;
    for input in &inputs {
        let outcome = catch_unwind(|| exercise(input));
        match outcome {
            Ok((filter_ok, _)) => parsed += usize::from(filter_ok),
            Err(_) => panic!("panicked on {input:?}"),
        }
    }
    // The loop is only worth running if some mutants still parse.
    assert!(parsed > VALID.len(), "only {parsed} of {} inputs parsed", inputs.len());
}
