//! Number formatting as Envoy's C++ prints it, where redvoy must print the same text: C's
//! `%.<P>g`, on which `absl::StrCat(double)` (6 digits, runtime values) and protobuf's JSON
//! printer (`SimpleDtoa`: 15 digits, or 17 when 15 do not round-trip) are built.

/// `printf("%.<precision>g", v)`: the shortest of fixed and exponent notation at `precision`
/// significant digits, trailing zeros removed, exponent with a sign and at least two digits.
pub(crate) fn printf_g(v: f64, precision: usize) -> String {
    if v.is_nan() {
        return "nan".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    let p = precision.max(1);
    // Rust's `{:e}` rounds the exact binary value like glibc's printf does.
    let sci = format!("{:.*e}", p - 1, v);
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return sci;
    };
    let exp: i64 = exp.parse().unwrap_or(0);
    let p_i = i64::try_from(p).unwrap_or(i64::MAX);
    if exp < -4 || exp >= p_i {
        let mantissa = trim_fraction(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
    } else {
        let decimals = usize::try_from(p_i - 1 - exp).unwrap_or(0);
        trim_fraction(&format!("{v:.decimals$}")).to_owned()
    }
}

fn trim_fraction(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// `absl::StrCat(double)`: six significant digits.
pub(crate) fn six_digits(v: f64) -> String {
    printf_g(v, 6)
}

/// protobuf's `SimpleDtoa`, used for doubles in JSON output.
pub(crate) fn simple_dtoa(v: f64) -> String {
    let short = printf_g(v, 15);
    if short.parse::<f64>().ok() == Some(v) {
        short
    } else {
        printf_g(v, 17)
    }
}

/// protobuf's `SimpleFtoa`, used for floats in JSON output.
pub(crate) fn simple_ftoa(v: f32) -> String {
    let short = printf_g(f64::from(v), 6);
    if short.parse::<f32>().ok() == Some(v) {
        short
    } else {
        printf_g(f64::from(v), 9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_printf() {
        assert_eq!(six_digits(5.0), "5");
        assert_eq!(six_digits(0.1), "0.1");
        assert_eq!(six_digits(1_234_567.0), "1.23457e+06");
        assert_eq!(six_digits(123_456.0), "123456");
        assert_eq!(six_digits(0.0001), "0.0001");
        assert_eq!(six_digits(0.00001), "1e-05");
        assert_eq!(six_digits(-2.5), "-2.5");
        assert_eq!(simple_dtoa(5.0), "5");
        assert_eq!(simple_dtoa(0.1), "0.1");
        assert_eq!(simple_dtoa(1e21), "1e+21");
        assert_eq!(simple_dtoa(1.5e-7), "1.5e-07");
        assert_eq!(simple_dtoa(12_345_678_901.0), "12345678901");
        assert_eq!(simple_dtoa(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(simple_ftoa(0.1), "0.1");
    }
}
