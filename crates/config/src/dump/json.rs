//! Protobuf's C++ JSON printer, as Envoy's admin uses it (`getJsonStringFromMessage`, pretty):
//! one-space indentation, proto field names, doubles printed by `SimpleDtoa` (`5`, not `5.0`),
//! and protobuf's extra string escapes (`<` `>` and some invisible code points as `\uXXXX`).

use std::io;

use prost_reflect::{DynamicMessage, SerializeOptions};
use serde_json::ser::{Formatter, PrettyFormatter};

use crate::numfmt;

/// Serializes `msg` the way Envoy's admin prints it, with the trailing newline.
pub(crate) fn to_envoy_json(msg: &DynamicMessage) -> Result<String, String> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, EnvoyFormatter::new());
    msg.serialize_with_options(&mut ser, &options())
        .map_err(|e| e.to_string())?;
    out.push(b'\n');
    String::from_utf8(out).map_err(|e| e.to_string())
}

/// `preserve_proto_field_names`; defaults omitted; 64-bit integers as strings; enums by name.
pub(crate) fn options() -> SerializeOptions {
    SerializeOptions::new().use_proto_field_name(true)
}

struct EnvoyFormatter {
    pretty: PrettyFormatter<'static>,
}

impl EnvoyFormatter {
    fn new() -> Self {
        Self {
            pretty: PrettyFormatter::with_indent(b" "),
        }
    }
}

/// protobuf's `MustEscape` (json/internal/writer.cc), minus what serde_json escapes itself
/// (`"`, `\` and C0 controls, with the same spellings).
fn must_escape(c: char) -> bool {
    matches!(
        u32::from(c),
        0x3c | 0x3e // < >
            | 0xfeff
            | 0xfff9..=0xfffb
            | 0x00ad
            | 0x06dd
            | 0x070f
            | 0x17b4
            | 0x17b5
            | 0xe0001
            | 0x7f..=0x9f
            | 0x0600..=0x0603
            | 0x200b..=0x200f
            | 0x2028..=0x202e
            | 0x2060..=0x2064
            | 0x206a..=0x206f
            | 0x1d173..=0x1d17a
            | 0xe0020..=0xe007f
    )
}

impl Formatter for EnvoyFormatter {
    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(numfmt::simple_dtoa(value).as_bytes())
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        w.write_all(numfmt::simple_ftoa(value).as_bytes())
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if !must_escape(c) {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(w, "\\u{unit:04x}")?;
            }
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }

    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.begin_array(w)
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.end_array(w)
    }

    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.pretty.begin_array_value(w, first)
    }

    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.end_array_value(w)
    }

    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.begin_object(w)
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.end_object(w)
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.pretty.begin_object_key(w, first)
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.begin_object_value(w)
    }

    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.end_object_value(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_protobuf() {
        let mut out = Vec::new();
        let mut f = EnvoyFormatter::new();
        f.write_string_fragment(&mut out, "a<b>&'é\u{2028}/\u{1d173}")
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a\\u003cb\\u003e&'é\\u2028/\\ud834\\udd73"
        );
    }
}
