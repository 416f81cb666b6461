//! Feeds arbitrary bytes to both decoder modes, whole and split at a byte the input chooses,
//! and checks the codec's promises: no panic, the same frames either way, and every frame
//! re-encodes to its `raw` bytes when it says it is verbatim.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use redvoy_resp::{Decoder, DecoderMode, Frame, Limits};

/// Small limits so the fuzzer reaches every limit check quickly.
fn limits() -> Limits {
    Limits {
        max_bulk_len: 1024,
        max_array_len: 64,
        max_depth: 8,
        max_inline_len: 256,
    }
}

/// Decodes `chunks` fed one after another; returns the frames and whether it ended in error.
fn run(mode: DecoderMode, chunks: &[&[u8]]) -> (Vec<Frame>, bool) {
    let mut decoder = Decoder::new(mode, limits());
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(split).min(rest.len());
    for mode in [DecoderMode::Request, DecoderMode::Reply] {
        let whole = run(mode, &[rest]);
        let split = run(mode, &[&rest[..at], &rest[at..]]);
        assert_eq!(whole.1, split.1);
        assert_eq!(whole.0.len(), split.0.len());
        for (a, b) in whole.0.iter().zip(&split.0) {
            assert_eq!(a.value, b.value);
            assert_eq!(a.raw, b.raw);
            if a.verbatim {
                let mut out = BytesMut::new();
                a.value.encode(&mut out);
                assert_eq!(&out[..], &a.raw[..]);
            }
        }
    }
});
