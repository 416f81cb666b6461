//! Upstream replies converted to RESP3 in every shape: no panic, and the output decodes as
//! RESP (a RESP3-aware check is beyond this target: it only needs to be complete frames).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use redvoy_resp::{encode_resp3, Decoder, DecoderMode, Limits, Resp3Shape};

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::new(DecoderMode::Reply, Limits::default());
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        for shape in [
            Resp3Shape::Plain,
            Resp3Shape::Map,
            Resp3Shape::MergedMap,
            Resp3Shape::Set,
            Resp3Shape::Double,
            Resp3Shape::Doubles,
            Resp3Shape::ScorePairs,
            Resp3Shape::Pairs,
            Resp3Shape::ScoreAt(0),
            Resp3Shape::ScoreAt(1),
            Resp3Shape::ScoreAt(2),
            Resp3Shape::Maps,
            Resp3Shape::Verbatim,
            Resp3Shape::KeyedMap,
        ] {
            let mut out = BytesMut::new();
            encode_resp3(&frame.value, shape, &mut out);
            assert!(!out.is_empty(), "{shape:?} wrote nothing");
        }
    }
});
