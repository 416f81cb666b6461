//! Which RESP3 shape Redis 7 gives each command's reply, for clients that sent `HELLO 3`.
//!
//! Upstream connections stay RESP2: they are shared by every client of a worker, whatever
//! protocol each client chose, and Redis Cluster discovery, redirections and the fan-out
//! merges all read RESP2. A RESP3 client's replies are converted on the way out
//! (`redvoy_resp::encode_resp3`); this table says how. Commands not listed keep their types,
//! with nulls written as `_`.

use bytes::Bytes;
use redvoy_resp::Resp3Shape;

/// The RESP3 shape of `cmd`'s reply (`cmd` lowercased; `args` the whole request).
pub(crate) fn shape_for(cmd: &str, args: &[Bytes]) -> Resp3Shape {
    let has = |word: &str| {
        args.iter()
            .skip(1)
            .any(|a| a.eq_ignore_ascii_case(word.as_bytes()))
    };
    let sub = || {
        args.get(1)
            .map(|s| s.to_ascii_lowercase())
            .unwrap_or_default()
    };
    match cmd {
        "hgetall" => Resp3Shape::Map,
        "config" if sub() == b"get" => Resp3Shape::MergedMap,
        "smembers" | "sinter" | "sunion" | "sdiff" => Resp3Shape::Set,
        // SPOP with a count replies a set; without one, a bulk string.
        "spop" if args.len() > 2 => Resp3Shape::Set,
        "zscore" | "zincrby" => Resp3Shape::Double,
        "zadd" if has("incr") => Resp3Shape::Double,
        "zmscore" => Resp3Shape::Doubles,
        "zrange" | "zrangebyscore" | "zrevrange" | "zrevrangebyscore" | "zrandmember" | "zdiff"
        | "zinter" | "zunion"
            if has("withscores") =>
        {
            Resp3Shape::ScorePairs
        }
        // With a count: pairs; without: one flat [member, score].
        "zpopmin" | "zpopmax" if args.len() > 2 => Resp3Shape::ScorePairs,
        "zpopmin" | "zpopmax" => Resp3Shape::ScoreAt(1),
        "bzpopmin" | "bzpopmax" => Resp3Shape::ScoreAt(2),
        "zrank" | "zrevrank" if has("withscore") => Resp3Shape::ScoreAt(1),
        "hrandfield" if has("withvalues") => Resp3Shape::Pairs,
        "xinfo" => match sub().as_slice() {
            b"stream" => Resp3Shape::Map,
            b"groups" | b"consumers" => Resp3Shape::Maps,
            _ => Resp3Shape::Plain,
        },
        "xread" | "xreadgroup" => Resp3Shape::KeyedMap,
        "info" => Resp3Shape::Verbatim,
        "client" if sub() == b"info" => Resp3Shape::Verbatim,
        "hello" => Resp3Shape::Map,
        _ => Resp3Shape::Plain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn shapes_follow_arguments() {
        assert_eq!(
            shape_for("hgetall", &args(&["HGETALL", "h"])),
            Resp3Shape::Map
        );
        assert_eq!(
            shape_for("zrange", &args(&["ZRANGE", "z", "0", "-1", "WithScores"])),
            Resp3Shape::ScorePairs
        );
        assert_eq!(
            shape_for("zrange", &args(&["ZRANGE", "z", "0", "-1"])),
            Resp3Shape::Plain
        );
        assert_eq!(shape_for("spop", &args(&["SPOP", "s"])), Resp3Shape::Plain);
        assert_eq!(
            shape_for("spop", &args(&["SPOP", "s", "2"])),
            Resp3Shape::Set
        );
        assert_eq!(
            shape_for("config", &args(&["CONFIG", "GET", "x"])),
            Resp3Shape::MergedMap
        );
        assert_eq!(
            shape_for("zpopmin", &args(&["ZPOPMIN", "z"])),
            Resp3Shape::ScoreAt(1)
        );
        assert_eq!(shape_for("get", &args(&["GET", "k"])), Resp3Shape::Plain);
    }
}
