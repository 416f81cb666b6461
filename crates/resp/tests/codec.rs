//! Byte-table, split-point, limit and property tests of the RESP codec, through its public API.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use redvoy_resp::{encode, DecodeError, Decoder, DecoderMode, Frame, Limits, RespValue};

use DecoderMode::{Reply, Request};

// === helpers ===

fn bulk(s: &str) -> RespValue {
    RespValue::bulk(Bytes::copy_from_slice(s.as_bytes()))
}

fn simple(s: &str) -> RespValue {
    RespValue::simple(Bytes::copy_from_slice(s.as_bytes()))
}

fn err(s: &str) -> RespValue {
    RespValue::error(Bytes::copy_from_slice(s.as_bytes()))
}

fn arr(items: Vec<RespValue>) -> RespValue {
    RespValue::Array(items)
}

fn args(items: &[&str]) -> RespValue {
    arr(items.iter().map(|s| bulk(s)).collect())
}

/// What a stream decodes to: the frames, then the error that stopped it (if any), then how many
/// bytes were left undecoded.
#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<Frame>,
    error: Option<DecodeError>,
    leftover: usize,
}

fn run_chunks(mode: DecoderMode, limits: Limits, chunks: &[&[u8]]) -> Outcome {
    let mut decoder = Decoder::new(mode, limits);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => {
                    // Nothing of the failing frame is consumed, so the leftover depends on how
                    // much had arrived: not part of the comparison.
                    return Outcome {
                        frames,
                        error: Some(e),
                        leftover: 0,
                    };
                }
            }
        }
    }
    Outcome {
        frames,
        error: None,
        leftover: buf.len(),
    }
}

fn run(mode: DecoderMode, input: &[u8]) -> Outcome {
    run_chunks(mode, Limits::default(), &[input])
}

/// Decodes `input` whole, byte by byte, and split at every index, and requires the same
/// outcome each time; returns it.
fn run_all_splits(mode: DecoderMode, limits: Limits, input: &[u8]) -> Outcome {
    let whole = run_chunks(mode, limits, &[input]);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(
        run_chunks(mode, limits, &bytes),
        whole,
        "byte by byte: {:?}",
        String::from_utf8_lossy(input)
    );
    for i in 0..=input.len() {
        let (a, b) = input.split_at(i);
        assert_eq!(
            run_chunks(mode, limits, &[a, b]),
            whole,
            "split at {i}: {:?}",
            String::from_utf8_lossy(input)
        );
    }
    whole
}

fn encoded(value: &RespValue) -> Vec<u8> {
    let mut out = BytesMut::new();
    value.encode(&mut out);
    assert_eq!(out.len(), value.encoded_len());
    out.to_vec()
}

/// Decodes exactly one complete frame from `input` (at every split point) and returns it.
fn one(mode: DecoderMode, input: &[u8]) -> Frame {
    let outcome = run_all_splits(mode, Limits::default(), input);
    assert_eq!(outcome.error, None, "{:?}", String::from_utf8_lossy(input));
    assert_eq!(outcome.leftover, 0);
    assert_eq!(outcome.frames.len(), 1);
    let Some(frame) = outcome.frames.into_iter().next() else {
        unreachable!("one frame checked above")
    };
    assert_eq!(&frame.raw[..], input);
    assert_eq!(
        frame.verbatim,
        encoded(&frame.value) == input,
        "verbatim flag for {:?}",
        String::from_utf8_lossy(input)
    );
    frame
}

fn fails(mode: DecoderMode, input: &[u8]) -> DecodeError {
    fails_with(mode, Limits::default(), input)
}

fn fails_with(mode: DecoderMode, limits: Limits, input: &[u8]) -> DecodeError {
    let outcome = run_all_splits(mode, limits, input);
    assert!(outcome.frames.is_empty(), "{outcome:?}");
    outcome
        .error
        .unwrap_or_else(|| panic!("no error for {:?}", String::from_utf8_lossy(input)))
}

fn incomplete(mode: DecoderMode, input: &[u8]) {
    let outcome = run_all_splits(mode, Limits::default(), input);
    assert_eq!(
        outcome,
        Outcome {
            frames: vec![],
            error: None,
            leftover: input.len()
        }
    );
}

// === byte tables ===

#[test]
fn every_type_decodes() {
    let table: Vec<(&[u8], RespValue, bool)> = vec![
        (b"+OK\r\n", simple("OK"), true),
        (b"+\r\n", simple(""), true),
        // A bare LF is taken into the line; written back, it is a space (see `encode::simple`).
        (b"+a b\nc\r\n", simple("a b\nc"), false),
        (b"-ERR unknown\r\n", err("ERR unknown"), true),
        (b"-\r\n", err(""), true),
        (b":0\r\n", RespValue::Integer(0), true),
        (b":42\r\n", RespValue::Integer(42), true),
        (b":-42\r\n", RespValue::Integer(-42), true),
        (
            b":9223372036854775807\r\n",
            RespValue::Integer(i64::MAX),
            true,
        ),
        (
            b":-9223372036854775808\r\n",
            RespValue::Integer(i64::MIN),
            true,
        ),
        (b"$3\r\nfoo\r\n", bulk("foo"), true),
        (b"$0\r\n\r\n", bulk(""), true),
        (b"$4\r\na\r\nb\r\n", bulk("a\r\nb"), true),
        (b"$-1\r\n", RespValue::Null, true),
        (b"*-1\r\n", RespValue::Null, false),
        (b"*0\r\n", arr(vec![]), true),
        (
            b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n",
            args(&["GET", "key"]),
            true,
        ),
        (
            b"*5\r\n+a\r\n-b\r\n:3\r\n$-1\r\n*1\r\n$1\r\nc\r\n",
            arr(vec![
                simple("a"),
                err("b"),
                RespValue::Integer(3),
                RespValue::Null,
                arr(vec![bulk("c")]),
            ]),
            true,
        ),
        (
            b"*2\r\n*-1\r\n*0\r\n",
            arr(vec![RespValue::Null, arr(vec![])]),
            false,
        ),
        (
            b"*1\r\n*1\r\n*1\r\n:1\r\n",
            arr(vec![arr(vec![arr(vec![RespValue::Integer(1)])])]),
            true,
        ),
        // Non-canonical numbers decode but are not forwarded verbatim.
        (b"$03\r\nfoo\r\n", bulk("foo"), false),
        (
            b"*02\r\n:1\r\n:2\r\n",
            arr(vec![1.into_int(), 2.into_int()]),
            false,
        ),
        (b":007\r\n", RespValue::Integer(7), false),
        (b":-0\r\n", RespValue::Integer(0), false),
        (b":00\r\n", RespValue::Integer(0), false),
        (b"$-01\r\n", RespValue::Null, false),
        (b"$00\r\n\r\n", bulk(""), false),
    ];
    for mode in [Reply, Request] {
        for (input, value, verbatim) in &table {
            let frame = one(mode, input);
            assert_eq!(&frame.value, value, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(
                frame.verbatim,
                *verbatim,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}

trait IntoInt {
    fn into_int(self) -> RespValue;
}

impl IntoInt for i64 {
    fn into_int(self) -> RespValue {
        RespValue::Integer(self)
    }
}

#[test]
fn every_prefix_of_a_frame_is_incomplete() {
    let frames: &[&[u8]] = &[
        b"+OK\r\n",
        b"-ERR x\r\n",
        b":-12\r\n",
        b"$3\r\nfoo\r\n",
        b"$-1\r\n",
        b"*-1\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n",
        b"*2\r\n*2\r\n:1\r\n+a\r\n*0\r\n",
    ];
    for frame in frames {
        for mode in [Reply, Request] {
            for i in 0..frame.len() {
                incomplete(mode, &frame[..i]);
            }
        }
    }
    for line in [&b"GET foo\r\n"[..], b"SET \"a b\" 'c'\n"] {
        for i in 0..line.len() {
            incomplete(Request, &line[..i]);
        }
    }
}

#[test]
fn pipelined_frames_in_one_buffer() {
    let mut input = Vec::new();
    let values = vec![
        args(&["SET", "k", "v"]),
        args(&["GET", "k"]),
        simple("OK"),
        RespValue::Null,
        RespValue::Integer(-5),
        arr(vec![]),
        arr(vec![bulk("x"), arr(vec![err("E")])]),
    ];
    for v in &values {
        input.extend_from_slice(&encoded(v));
    }
    input.extend_from_slice(b"*2\r\n$3\r\nGET"); // an incomplete tail stays in the buffer
    for mode in [Reply, Request] {
        let outcome = run_all_splits(mode, Limits::default(), &input);
        assert_eq!(outcome.error, None);
        assert_eq!(outcome.leftover, 11);
        let got: Vec<RespValue> = outcome.frames.iter().map(|f| f.value.clone()).collect();
        assert_eq!(got, values);
        assert!(outcome.frames.iter().all(|f| f.verbatim));
        let raws: Vec<u8> = outcome.frames.iter().flat_map(|f| f.raw.to_vec()).collect();
        assert_eq!(raws, input[..input.len() - 11]);
    }
}

#[test]
fn bulk_strings_are_slices_of_raw() {
    let frame = one(Reply, b"*2\r\n$3\r\nfoo\r\n+bar\r\n");
    let raw = frame.raw.as_ptr_range();
    let RespValue::Array(items) = &frame.value else {
        panic!("not an array")
    };
    for item in items {
        let (RespValue::Bulk(b) | RespValue::Simple(b)) = item else {
            panic!("unexpected {item:?}")
        };
        assert!(raw.contains(&b.as_ptr()), "payload copied out of the frame");
    }
}

#[test]
fn large_bulk_in_chunks() {
    let payload = vec![b'\r'; 4 << 20]; // CR bytes in the payload must not confuse the skip
    let mut input = format!("*2\r\n$3\r\nSET\r\n${}\r\n", payload.len()).into_bytes();
    input.extend_from_slice(&payload);
    input.extend_from_slice(b"\r\n");
    let chunks: Vec<&[u8]> = input.chunks(64 * 1024).collect();
    let outcome = run_chunks(Request, Limits::default(), &chunks);
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.frames.len(), 1);
    let frame = &outcome.frames[0];
    assert!(frame.verbatim);
    let items = frame.value.as_array().unwrap();
    assert_eq!(items[1].as_bulk().unwrap().len(), payload.len());
}

#[test]
fn long_simple_string_in_chunks() {
    let mut input = vec![b'-'];
    input.extend(std::iter::repeat_n(b'e', 1 << 20));
    input.extend_from_slice(b"\r\n");
    let chunks: Vec<&[u8]> = input.chunks(1000).collect();
    let outcome = run_chunks(Reply, Limits::default(), &chunks);
    assert_eq!(outcome.error, None);
    assert_eq!(
        outcome.frames[0].value,
        RespValue::Error(Bytes::from(vec![b'e'; 1 << 20]))
    );
}

/// Feeding one byte at a time must stay linear: a decoder that re-scanned the frame from its
/// start on every call would take minutes here instead of milliseconds.
#[test]
fn byte_by_byte_is_linear() {
    let mut line = vec![b'-'];
    line.extend(std::iter::repeat_n(b'e', 256 * 1024));
    line.extend_from_slice(b"\r\n");
    let mut inline = vec![b'x'; 60 * 1024];
    inline.extend_from_slice(b" y\r\n");
    let mut big = b"*2\r\n$1\r\na\r\n$262144\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'\r', 256 * 1024));
    big.extend_from_slice(b"\r\n");
    let mut zeros = b"$".to_vec();
    zeros.extend(std::iter::repeat_n(b'0', 256 * 1024));
    zeros.extend_from_slice(b"1\r\nz\r\n");
    for input in [&line, &inline, &big, &zeros] {
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        let outcome = run_chunks(Request, Limits::default(), &chunks);
        assert_eq!(outcome.error, None);
        assert_eq!(outcome.frames.len(), 1);
        assert_eq!(outcome.frames[0].raw.len(), input.len());
    }
}

// === inline commands ===

#[test]
fn inline_commands() {
    let table: &[(&[u8], &[&str])] = &[
        (b"PING\r\n", &["PING"]),
        (b"PING\n", &["PING"]),
        (b"get foo\r\n", &["get", "foo"]),
        (b"  set   a\tb  \r\n", &["set", "a", "b"]),
        (b"\r\n", &[]),
        (b"\n", &[]),
        (b"   \r\n", &[]),
        (b"SET k \"a b\"\r\n", &["SET", "k", "a b"]),
        (b"SET k \"\"\r\n", &["SET", "k", ""]),
        (b"SET k ''\r\n", &["SET", "k", ""]),
        (
            b"ECHO \"\\n\\r\\t\\b\\a\\\\\\\"\\x41\\x7a\\q\"\r\n",
            &["ECHO", "\n\r\t\u{8}\u{7}\\\"Azq"],
        ),
        (b"ECHO \"\\xZZ\"\r\n", &["ECHO", "xZZ"]),
        (b"ECHO 'a\\'b \\n'\r\n", &["ECHO", "a'b \\n"]),
        (b"ECHO foo\"bar baz\"\r\n", &["ECHO", "foobar baz"]),
        (b"\"quoted first\" x\r\n", &["quoted first", "x"]),
        (b"'single' \"double\"\r\n", &["single", "double"]),
        (b"a\rb\r\n", &["a", "b"]),
        (b"9lives\r\n", &["9lives"]),
        (b"a\0b\r\n", &["a", "b"]),
        (b"a\x0bb\r\n", &["a\u{b}b"]),
    ];
    for (input, expected) in table {
        let frame = one(Request, input);
        assert_eq!(
            frame.value,
            args(expected),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        assert!(!frame.verbatim);
        assert_eq!(
            frame.value.clone().into_args().unwrap().len(),
            expected.len()
        );
    }
}

#[test]
fn inline_escapes_yield_raw_bytes() {
    let frame = one(Request, b"SET k \"\\xff\\x00\"\r\n");
    assert_eq!(
        frame.value.as_array().unwrap()[2],
        RespValue::Bulk(Bytes::from_static(b"\xff\x00"))
    );
}

#[test]
fn inline_unbalanced_quotes() {
    for input in [
        &b"SET k \"abc\r\n"[..],
        b"SET k 'abc\r\n",
        b"SET k \"a\"b\r\n",
        b"SET k 'a'b\r\n",
        b"ECHO \"\\\"\r\n",
        b"\"\n",
    ] {
        assert_eq!(
            fails(Request, input),
            DecodeError::UnbalancedQuotes,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn inline_mixed_with_resp() {
    let input = b"PING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\nset a \"b c\"\n*1\r\n$4\r\nPING\r\n\r\n";
    let outcome = run_all_splits(Request, Limits::default(), input);
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.leftover, 0);
    let got: Vec<(RespValue, bool)> = outcome
        .frames
        .into_iter()
        .map(|f| (f.value, f.verbatim))
        .collect();
    assert_eq!(
        got,
        vec![
            (args(&["PING"]), false),
            (args(&["GET", "k"]), true),
            (args(&["set", "a", "b c"]), false),
            (args(&["PING"]), true),
            (args(&[]), false),
        ]
    );
}

#[test]
fn inline_only_at_top_level_and_only_for_requests() {
    assert_eq!(fails(Reply, b"PING\r\n"), DecodeError::InvalidValueType);
    assert_eq!(fails(Reply, b"\r\n"), DecodeError::InvalidValueType);
    assert_eq!(
        fails(Request, b"*1\r\nPING\r\n"),
        DecodeError::InvalidValueType
    );
    for first in [b'\t', b'!', b'#', b'.', 0u8, 0xff, b'_', b'%', b'~', b'>'] {
        assert_eq!(
            fails(Request, &[first, b'x', b'\r', b'\n']),
            DecodeError::InvalidValueType,
            "first byte {first:#x}"
        );
    }
}

#[test]
fn inline_length_limit() {
    let limits = Limits {
        max_inline_len: 8,
        ..Limits::default()
    };
    let ok = run_all_splits(Request, limits, b"12345678\r\n");
    assert_eq!(ok.frames[0].value, args(&["12345678"]));
    let ok = run_all_splits(Request, limits, b"1234567\r\r\n");
    assert_eq!(ok.frames[0].value, args(&["1234567"]));
    assert_eq!(
        fails_with(Request, limits, b"123456789\r\n"),
        DecodeError::InlineTooLong
    );
    assert_eq!(
        fails_with(Request, limits, b"123456789\n"),
        DecodeError::InlineTooLong
    );
    // Without a newline at all the error comes once the limit is passed.
    assert_eq!(
        fails_with(Request, limits, b"1234567890"),
        DecodeError::InlineTooLong
    );
    // Too many arguments.
    let limits = Limits {
        max_array_len: 2,
        ..Limits::default()
    };
    assert_eq!(
        fails_with(Request, limits, b"a b c\r\n"),
        DecodeError::ElementCountExceeded
    );
}

// === errors and limits ===

#[test]
fn protocol_errors() {
    let table: &[(&[u8], DecodeError)] = &[
        (b"!x\r\n", DecodeError::InvalidValueType),
        (b"*1\r\n!\r\n", DecodeError::InvalidValueType),
        (b":1x\r\n", DecodeError::InvalidIntegerCharacter),
        (b":+1\r\n", DecodeError::InvalidIntegerCharacter),
        (b":1-\r\n", DecodeError::InvalidIntegerCharacter),
        (b":--1\r\n", DecodeError::InvalidIntegerCharacter),
        (b"$ 3\r\n", DecodeError::InvalidIntegerCharacter),
        (b"*1\n", DecodeError::InvalidIntegerCharacter),
        (b":1\rx", DecodeError::ExpectedNewLine),
        (b"+OK\rx", DecodeError::ExpectedNewLine),
        (b"$3\r\nfoo\rx", DecodeError::ExpectedNewLine),
        (b"$3\r\nfoox\r\n", DecodeError::ExpectedCarriageReturn),
        (b"$3\r\nfo\r\n", DecodeError::ExpectedCarriageReturn),
        (b":9223372036854775808\r\n", DecodeError::IntegerOverflow),
        (b":-9223372036854775809\r\n", DecodeError::IntegerOverflow),
        (b":99999999999999999999\r\n", DecodeError::IntegerOverflow),
        (b"$99999999999999999999\r\n", DecodeError::IntegerOverflow),
        (b":\r\n", DecodeError::IntegerNoDigits),
        (b":-\r\n", DecodeError::IntegerNoDigits),
        (b"$\r\n", DecodeError::IntegerNoDigits),
        (b"*\r\n", DecodeError::IntegerNoDigits),
        (b"$-2\r\n", DecodeError::InvalidNegativeLength),
        (b"*-2\r\n", DecodeError::InvalidNegativeLength),
        (b"$-0\r\n", DecodeError::InvalidNegativeLength),
        (b"$536870913\r\n", DecodeError::BulkTooLong),
        (b"*2000001\r\n", DecodeError::ElementCountExceeded),
    ];
    for mode in [Reply, Request] {
        for (input, expected) in table {
            assert_eq!(
                fails(mode, input),
                *expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}

#[test]
fn error_texts_are_envoys() {
    assert_eq!(
        DecodeError::InvalidValueType.to_string(),
        "invalid value type"
    );
    assert_eq!(
        DecodeError::InvalidIntegerCharacter.to_string(),
        "invalid integer character"
    );
    assert_eq!(
        DecodeError::ExpectedNewLine.to_string(),
        "expected new line"
    );
    assert_eq!(
        DecodeError::ExpectedCarriageReturn.to_string(),
        "expected carriage return"
    );
    assert_eq!(DecodeError::IntegerOverflow.to_string(), "integer overflow");
    assert_eq!(
        DecodeError::BulkTooLong.to_string(),
        "bulk string length exceeds maximum"
    );
    assert_eq!(
        DecodeError::ElementCountExceeded.to_string(),
        "element count exceeds maximum"
    );
    assert_eq!(
        DecodeError::DepthExceeded.to_string(),
        "nesting depth exceeds maximum"
    );
    assert_eq!(
        DecodeError::UnbalancedQuotes.to_string(),
        "unbalanced quotes in request"
    );
    assert_eq!(
        DecodeError::InlineTooLong.to_string(),
        "inline request too long"
    );
}

#[test]
fn bulk_limit_is_checked_at_the_header() {
    // The largest allowed bulk is waited for...
    incomplete(Reply, b"$536870912\r\n");
    // ...one byte more is refused before any payload arrives.
    assert_eq!(fails(Reply, b"$536870913\r\n"), DecodeError::BulkTooLong);
    let limits = Limits {
        max_bulk_len: 3,
        ..Limits::default()
    };
    assert_eq!(
        run_all_splits(Reply, limits, b"$3\r\nabc\r\n").frames[0].value,
        bulk("abc")
    );
    assert_eq!(
        fails_with(Reply, limits, b"*1\r\n$4\r\n"),
        DecodeError::BulkTooLong
    );
    // The same bound applies to simple strings and errors.
    assert_eq!(
        fails_with(Reply, limits, b"+abcd\r\n"),
        DecodeError::SimpleStringTooLong
    );
    assert_eq!(
        fails_with(Reply, limits, b"-abcde"),
        DecodeError::SimpleStringTooLong
    );
    assert_eq!(
        run_all_splits(Reply, limits, b"+abc\r\n").frames[0].value,
        simple("abc")
    );
}

#[test]
fn array_and_depth_limits() {
    let limits = Limits {
        max_array_len: 2,
        max_depth: 2,
        ..Limits::default()
    };
    assert_eq!(
        run_all_splits(Reply, limits, b"*2\r\n*2\r\n:1\r\n:2\r\n*0\r\n").frames[0].value,
        arr(vec![
            arr(vec![RespValue::Integer(1), RespValue::Integer(2)]),
            arr(vec![])
        ])
    );
    assert_eq!(
        fails_with(Reply, limits, b"*3\r\n"),
        DecodeError::ElementCountExceeded
    );
    assert_eq!(
        fails_with(Reply, limits, b"*1\r\n*1\r\n*0\r\n"),
        DecodeError::DepthExceeded
    );
    // Null arrays do not nest.
    assert_eq!(
        run_all_splits(Reply, limits, b"*1\r\n*1\r\n*-1\r\n").frames[0].value,
        arr(vec![arr(vec![RespValue::Null])])
    );
    let mut deep = b"*1\r\n".repeat(64);
    deep.extend_from_slice(b":1\r\n");
    assert!(run(Reply, &deep).error.is_none());
    let mut deeper = b"*1\r\n".repeat(65);
    deeper.extend_from_slice(b":1\r\n");
    assert_eq!(run(Reply, &deeper).error, Some(DecodeError::DepthExceeded));
}

#[test]
fn decoder_recovers_after_reset() {
    let mut decoder = Decoder::new(Reply, Limits::default());
    let mut buf = BytesMut::from(&b"*2\r\n:1\r\n"[..]);
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    assert!(decoder.in_frame());
    // A caller that hands over a different (shorter) buffer gets a fresh parse, not a panic.
    let mut other = BytesMut::from(&b":7\r\n"[..]);
    let frame = decoder.decode(&mut other).unwrap().unwrap();
    assert_eq!(frame.value, RespValue::Integer(7));
    // After an error the decoder starts over too.
    let mut bad = BytesMut::from(&b"?"[..]);
    assert!(decoder.decode(&mut bad).is_err());
    let mut good = BytesMut::from(&b"+OK\r\n"[..]);
    assert_eq!(
        decoder.decode(&mut good).unwrap().unwrap().value,
        simple("OK")
    );
}

// === encoder ===

#[test]
fn encoder_table() {
    let table: Vec<(RespValue, &[u8])> = vec![
        (simple("OK"), b"+OK\r\n"),
        (err("ERR x"), b"-ERR x\r\n"),
        (RespValue::Integer(-3), b":-3\r\n"),
        (bulk("foo"), b"$3\r\nfoo\r\n"),
        (RespValue::Null, b"$-1\r\n"),
        (arr(vec![]), b"*0\r\n"),
        (
            arr(vec![
                bulk("a"),
                RespValue::Null,
                arr(vec![RespValue::Integer(1)]),
            ]),
            b"*3\r\n$1\r\na\r\n$-1\r\n*1\r\n:1\r\n",
        ),
    ];
    for (value, bytes) in table {
        assert_eq!(encoded(&value), bytes);
        assert_eq!(&value.to_bytes()[..], bytes);
    }
    let mut out = BytesMut::new();
    encode::command(&mut out, &[b"mget", b"a", b"b"]);
    assert_eq!(&out[..], b"*3\r\n$4\r\nmget\r\n$1\r\na\r\n$1\r\nb\r\n");
}

#[test]
fn into_args_and_as_bulk() {
    assert_eq!(
        args(&["GET", "k"]).into_args(),
        Some(vec![Bytes::from_static(b"GET"), Bytes::from_static(b"k")])
    );
    assert_eq!(arr(vec![]).into_args(), Some(vec![]));
    assert_eq!(
        arr(vec![bulk("a"), RespValue::Integer(1)]).into_args(),
        None
    );
    assert_eq!(arr(vec![RespValue::Null]).into_args(), None);
    assert_eq!(bulk("a").into_args(), None);
    assert_eq!(bulk("a").as_bulk(), Some(&Bytes::from_static(b"a")));
    assert_eq!(simple("a").as_bulk(), None);
}

// === properties ===

fn arb_value() -> impl Strategy<Value = RespValue> {
    // Lines hold no CR or LF: the encoder writes either as a space.
    let text = proptest::collection::vec(
        any::<u8>().prop_filter("no CR or LF", |b| *b != b'\r' && *b != b'\n'),
        0..12,
    );
    let leaf = prop_oneof![
        text.clone().prop_map(|t| RespValue::Simple(Bytes::from(t))),
        text.prop_map(|t| RespValue::Error(Bytes::from(t))),
        any::<i64>().prop_map(RespValue::Integer),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| RespValue::Bulk(Bytes::from(b))),
        Just(RespValue::Null),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        proptest::collection::vec(inner, 0..6).prop_map(RespValue::Array)
    })
}

/// Splits `input` at the given cut points (taken modulo its length).
fn cut<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut last = 0;
    for p in points {
        chunks.push(&input[last..p]);
        last = p;
    }
    chunks.push(&input[last..]);
    chunks
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn roundtrip_at_random_splits(
        values in proptest::collection::vec(arb_value(), 1..5),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut input = Vec::new();
        for v in &values {
            input.extend_from_slice(&encoded(v));
        }
        for mode in [Reply, Request] {
            let outcome = run_chunks(mode, Limits::default(), &cut(&input, &cuts));
            prop_assert_eq!(outcome.error, None);
            prop_assert_eq!(outcome.leftover, 0);
            let got: Vec<RespValue> = outcome.frames.iter().map(|f| f.value.clone()).collect();
            prop_assert_eq!(&got, &values);
            for frame in &outcome.frames {
                prop_assert!(frame.verbatim);
                prop_assert_eq!(&frame.raw[..], &encoded(&frame.value)[..]);
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(
        input in proptest::collection::vec(
            prop_oneof![
                4 => any::<u8>(),
                8 => proptest::sample::select(&b"*$+-:\r\n0123456789 \"'\\xaZ"[..]),
            ],
            0..64,
        ),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let limits = Limits { max_bulk_len: 64, max_array_len: 8, max_depth: 4, max_inline_len: 32 };
        for mode in [Reply, Request] {
            let whole = run_chunks(mode, limits, &[&input]);
            prop_assert_eq!(&run_chunks(mode, limits, &cut(&input, &cuts)), &whole);
            for frame in &whole.frames {
                prop_assert_eq!(frame.verbatim, encoded(&frame.value) == frame.raw[..]);
            }
        }
    }

    #[test]
    fn mutated_frames_never_panic(
        value in arb_value(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let mut input = encoded(&value);
        for (at, byte) in flips {
            let at = at % input.len();
            input[at] = byte;
        }
        for mode in [Reply, Request] {
            let whole = run_chunks(mode, Limits::default(), &[&input]);
            prop_assert_eq!(&run_chunks(mode, Limits::default(), &cut(&input, &cuts)), &whole);
            for frame in &whole.frames {
                prop_assert_eq!(frame.verbatim, encoded(&frame.value) == frame.raw[..]);
            }
        }
    }
}

/// `decode_command` gives a flat command's arguments (as `decode` would after `into_args`),
/// across chunk boundaries, and everything else as the frame `decode` gives.
#[test]
fn decode_command_matches_decode() {
    use redvoy_resp::Command;
    let inputs: &[&[u8]] = &[
        b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n",
        b"*3\r\n$3\r\nset\r\n$1\r\nk\r\n$0\r\n\r\n",
        b"*02\r\n$3\r\nGET\r\n$3\r\nkey\r\n",
        b"GET key\r\n",
        b"*2\r\n$3\r\nGET\r\n*1\r\n$1\r\nx\r\n",
        b"*2\r\n$3\r\nGET\r\n$-1\r\n",
        b"*0\r\n",
    ];
    for input in inputs {
        let expected = one(Request, input);
        for split in 1..=input.len() {
            let mut decoder = Decoder::new(Request, Limits::default());
            let mut buf = BytesMut::from(&input[..split]);
            let mut args = vec![Bytes::from_static(b"stale")];
            let mut got = decoder.decode_command(&mut buf, &mut args).unwrap();
            if split < input.len() {
                assert!(got.is_none(), "{input:?} complete after {split} bytes");
                buf.extend_from_slice(&input[split..]);
                got = decoder.decode_command(&mut buf, &mut args).unwrap();
            }
            match got.expect("complete") {
                Command::Args { raw, verbatim } => {
                    assert_eq!(raw, expected.raw);
                    assert_eq!(verbatim, expected.verbatim);
                    assert_eq!(Some(args), expected.value.clone().into_args(), "{input:?}");
                }
                Command::Other(frame) => {
                    assert_eq!(frame, expected);
                    assert!(
                        expected
                            .value
                            .clone()
                            .into_args()
                            .is_none_or(|a| a.is_empty())
                            || !expected.raw.starts_with(b"*"),
                        "{input:?} should have come back as arguments"
                    );
                }
            }
            assert!(buf.is_empty());
        }
    }
}
