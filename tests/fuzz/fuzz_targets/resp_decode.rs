//! The RESP decoder in both modes and both entry points (`decode`, `decode_command`), fed the
//! input in two pieces split where its first byte says: no panic, and the two entry points
//! agree on where each frame ends.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use redvoy_resp::{Command, Decoder, DecoderMode, Limits};

/// Small limits so that the limit paths are reached by short inputs too.
fn limits() -> Limits {
    Limits {
        max_bulk_len: 64,
        max_array_len: 16,
        max_depth: 4,
        ..Limits::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(input.len());
    for mode in [DecoderMode::Request, DecoderMode::Reply] {
        for small in [false, true] {
            let limits = if small { limits() } else { Limits::default() };
            let mut by_frame = Decoder::new(mode, limits);
            let mut by_command = Decoder::new(mode, limits);
            let mut a = BytesMut::from(&input[..split]);
            let mut b = BytesMut::from(&input[..split]);
            let mut args: Vec<Bytes> = Vec::new();
            for (step, more) in [(0, &input[split..]), (1, &[][..])] {
                if step == 1 {
                    // Nothing more arrives: both must have stopped at the same place.
                    assert_eq!(a.len(), b.len());
                }
                a.extend_from_slice(more);
                b.extend_from_slice(more);
                loop {
                    let x = by_frame.decode(&mut a);
                    let y = by_command.decode_command(&mut b, &mut args);
                    match (x, y) {
                        (Ok(Some(frame)), Ok(Some(Command::Args { raw, .. }))) => {
                            assert_eq!(frame.raw, raw)
                        }
                        (Ok(Some(frame)), Ok(Some(Command::Other(other)))) => {
                            assert_eq!(frame.raw, other.raw)
                        }
                        (Ok(None), Ok(None)) => break,
                        (Err(_), Err(_)) => return,
                        (x, y) => panic!("decode {x:?} but decode_command {y:?}"),
                    }
                }
            }
        }
    }
});
