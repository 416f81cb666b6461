//! Decoder/encoder throughput, std-only (no criterion, to keep the build light):
//! `cargo bench -p redvoy-resp`. Prints ns per operation; asserts nothing. Time is this
//! thread's on-CPU time (from `/proc/thread-self/schedstat`) where available, so a machine
//! shared with compilers still gives usable figures; wall time otherwise.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use redvoy_resp::{encode, Decoder, DecoderMode, Limits, RespValue};

/// How long each case runs after warm-up.
const MEASURE: Duration = Duration::from_millis(700);

/// Nanoseconds this thread has spent on a CPU, if the kernel tells.
fn cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

fn bench(name: &str, mut f: impl FnMut() -> usize) {
    let warm = Instant::now();
    while warm.elapsed() < MEASURE / 4 {
        black_box(f());
    }
    let start = Instant::now();
    let cpu_start = cpu_ns();
    let mut ops = 0usize;
    while start.elapsed() < MEASURE {
        for _ in 0..64 {
            ops += black_box(f());
        }
    }
    let wall = start.elapsed().as_nanos() as f64;
    let spent = match (cpu_start, cpu_ns()) {
        (Some(a), Some(b)) => (b - a) as f64,
        _ => wall,
    };
    println!("{name:<44} {:>10.1} ns/op", spent / ops as f64);
}

/// Decodes `frames` copies of `frame` laid out in one buffer (as a pipelined read would).
fn decode_pipelined(name: &str, mode: DecoderMode, frame: &[u8], frames: usize) {
    let input = frame.repeat(frames);
    let mut decoder = Decoder::new(mode, Limits::default());
    bench(name, || {
        let mut buf = BytesMut::from(&input[..]);
        let mut n = 0;
        while let Ok(Some(f)) = decoder.decode(&mut buf) {
            black_box(&f.value);
            n += 1;
        }
        n
    });
}

fn main() {
    let get = b"*2\r\n$3\r\nGET\r\n$16\r\nkey:000000000001\r\n";
    let set = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:000000000001\r\n$3\r\nxxx\r\n";
    let mut mset = BytesMut::new();
    let mut mset_args: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
    for i in 0..10 {
        mset_args.push(format!("key:{i:012}").into_bytes());
        mset_args.push(b"xxx".to_vec());
    }
    let refs: Vec<&[u8]> = mset_args.iter().map(Vec::as_slice).collect();
    encode::command(&mut mset, &refs);

    decode_pipelined("decode GET (pipelined x16)", DecoderMode::Request, get, 16);
    decode_pipelined("decode SET (pipelined x16)", DecoderMode::Request, set, 16);
    decode_pipelined(
        "decode MSET 10 keys (pipelined x16)",
        DecoderMode::Request,
        &mset,
        16,
    );
    decode_pipelined(
        "decode +OK reply (pipelined x16)",
        DecoderMode::Reply,
        b"+OK\r\n",
        16,
    );
    decode_pipelined(
        "decode $3 reply (pipelined x16)",
        DecoderMode::Reply,
        b"$3\r\nxxx\r\n",
        16,
    );
    decode_pipelined(
        "decode inline GET (pipelined x16)",
        DecoderMode::Request,
        b"GET key:000000000001\r\n",
        16,
    );

    // A 4 MiB SET value arriving in 64 KiB reads.
    let payload = vec![b'v'; 4 << 20];
    let mut big = BytesMut::new();
    encode::command(&mut big, &[b"SET", b"k", &payload]);
    let mut decoder = Decoder::new(DecoderMode::Request, Limits::default());
    bench("decode 4 MiB SET in 64 KiB chunks", || {
        let mut buf = BytesMut::with_capacity(big.len());
        for chunk in big.chunks(64 * 1024) {
            buf.extend_from_slice(chunk);
            if let Ok(Some(f)) = decoder.decode(&mut buf) {
                black_box(f);
            }
        }
        1
    });

    let value = RespValue::Array(vec![
        RespValue::bulk(&b"GET"[..]),
        RespValue::bulk(&b"key:000000000001"[..]),
    ]);
    let mut out = BytesMut::with_capacity(1 << 16);
    bench("encode GET value", || {
        out.clear();
        value.encode(&mut out);
        1
    });
}
