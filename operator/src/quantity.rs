//! Kubernetes resource quantities, parsed as the API server parses them
//! (`k8s.io/apimachinery/pkg/api/resource`, `ParseQuantity`), so that an
//! override the webhook admits is one the API server admits too.
//!
//! The grammar, from the comment on `Quantity` in
//! `staging/src/k8s.io/apimachinery/pkg/api/resource/quantity.go`:
//!
//! ```text
//! <quantity>        ::= <signedNumber><suffix>
//! <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
//! <signedNumber>    ::= <number> | <sign><number>
//! <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
//! <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
//! <decimalSI>       ::= m | "" | k | M | G | T | P | E
//! <decimalExponent> ::= "e" <signedNumber> | "E" <signedNumber>
//! ```
//!
//! `ParseQuantity` also takes `n` (nano) and `u` (micro), which the
//! grammar comment leaves out (`suffix.go`, `newSuffixer`). As there, the exponent of `<decimalExponent>` is an integer
//! (`1e3`, `1E-3`), and `E` alone is the exa suffix. "No quantity may
//! represent a number greater than 2^63-1 in magnitude, nor may it have more
//! than 3 decimal places. Numbers larger or more precise will be capped or
//! rounded up": comparisons below use that milli-unit value.

use std::cmp::Ordering;

use num_bigint::BigInt;

/// A parsed quantity: its exact value is `mantissa × 10^exp10 × 2^exp2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity {
    mantissa: BigInt,
    exp10: i64,
    exp2: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Format,
    #[error("unable to parse quantity's suffix")]
    Suffix,
}

fn digits(s: &str) -> usize {
    s.bytes().take_while(u8::is_ascii_digit).count()
}

impl Quantity {
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        if input.is_empty() {
            return Err(QuantityError::Format);
        }
        let (negative, rest) = match input.as_bytes()[0] {
            b'+' => (false, &input[1..]),
            b'-' => (true, &input[1..]),
            _ => (false, input),
        };
        // <number>: digits, an optional point and digits; at least one digit.
        let whole = digits(rest);
        let (frac, after) = match rest[whole..].strip_prefix('.') {
            Some(tail) => {
                let n = digits(tail);
                (&tail[..n], &tail[n..])
            }
            None => ("", &rest[whole..]),
        };
        if whole == 0 && frac.is_empty() {
            return Err(QuantityError::Format);
        }
        let mut mantissa: BigInt = format!("{}{frac}", &rest[..whole]).parse().map_err(|_| QuantityError::Format)?;
        if negative {
            mantissa = -mantissa;
        }
        let mut exp10 = -(frac.len() as i64);
        let mut exp2 = 0;
        match after {
            "" => {}
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            "Ki" => exp2 = 10,
            "Mi" => exp2 = 20,
            "Gi" => exp2 = 30,
            "Ti" => exp2 = 40,
            "Pi" => exp2 = 50,
            "Ei" => exp2 = 60,
            s if s.starts_with(['e', 'E']) => {
                let exp = &s[1..];
                let unsigned = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if unsigned.is_empty() || digits(unsigned) != unsigned.len() {
                    return Err(QuantityError::Suffix);
                }
                let e: i64 = exp.parse().map_err(|_| QuantityError::Suffix)?;
                if e.unsigned_abs() > 1_000 {
                    // Far beyond the 2^63-1 cap or below a milli-unit either way.
                    exp10 = exp10.saturating_add(e.signum() * 1_000);
                } else {
                    exp10 += e;
                }
            }
            s if s.bytes().all(|b| b"eEinumkKMGTP".contains(&b) || b"+-".contains(&b) || b.is_ascii_digit()) => {
                return Err(QuantityError::Suffix);
            }
            _ => return Err(QuantityError::Format),
        }
        Ok(Self { mantissa, exp10, exp2 })
    }

    pub fn is_negative(&self) -> bool {
        self.mantissa.sign() == num_bigint::Sign::Minus
    }

    /// The value in milli-units, rounded up (away from zero) and capped at
    /// 2^63-1 units, as the API server holds it.
    pub fn milli_value(&self) -> BigInt {
        let mut n = &self.mantissa * (BigInt::from(1) << self.exp2);
        let shift = self.exp10 + 3;
        let ten = BigInt::from(10);
        if shift >= 0 {
            n *= ten.pow(shift as u32);
        } else {
            let d = ten.pow((-shift) as u32);
            let (q, r) = (&n / &d, &n % &d);
            n = if r == BigInt::from(0) {
                q
            } else if n.sign() == num_bigint::Sign::Minus {
                q - 1
            } else {
                q + 1
            };
        }
        let cap = BigInt::from(i64::MAX) * 1000;
        if n > cap {
            cap
        } else if n < -cap.clone() {
            -cap
        } else {
            n
        }
    }

    pub fn cmp_value(&self, other: &Self) -> Ordering {
        self.milli_value().cmp(&other.milli_value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn milli(s: &str) -> BigInt {
        Quantity::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}")).milli_value()
    }

    /// The forms the grammar allows, and the examples of quantity.go's
    /// documentation ("1.5 will be serialized as 1500m", "1.5Gi will be
    /// serialized as 1536Mi", "0.1m will rounded up to 1m").
    #[test]
    fn documented_forms_parse_to_their_values() {
        assert_eq!(milli("1.5"), milli("1500m"));
        assert_eq!(milli("1.5Gi"), milli("1536Mi"));
        assert_eq!(milli("0.1m"), milli("1m"));
        assert_eq!(milli("1E9"), BigInt::from(1_000_000_000_000i64));
        assert_eq!(milli("1e9"), milli("1G"));
        assert_eq!(milli("1E"), milli("1000P"));
        assert_eq!(milli("1e3"), milli("1k"));
        assert_eq!(milli("1E-3"), milli("1m"));
        assert_eq!(milli("1e+3"), milli("1000"));
        assert_eq!(milli("1Ki"), BigInt::from(1_024_000));
        assert_eq!(milli("1Ei"), BigInt::from(1u64 << 60) * 1000);
        assert_eq!(milli(".5"), BigInt::from(500));
        assert_eq!(milli("5."), BigInt::from(5000));
        assert_eq!(milli("+5"), BigInt::from(5000));
        assert_eq!(milli("-5m"), BigInt::from(-5));
        assert_eq!(milli("0"), BigInt::from(0));
        assert_eq!(milli("1u"), BigInt::from(1));
        assert_eq!(milli("2500000n"), milli("3m"));
        assert_eq!(milli("100m"), BigInt::from(100));
        assert_eq!(milli("64Mi"), BigInt::from(64 * 1024 * 1024 * 1000i64));
        // Capped at 2^63-1.
        assert_eq!(milli("1e100"), BigInt::from(i64::MAX) * 1000);
        assert_eq!(milli("16Ei"), milli("9223372036854775807"));
        assert!(Quantity::parse("-1").unwrap().is_negative());
    }

    #[test]
    fn malformed_quantities_are_refused() {
        for bad in [
            "", " ", "1 ", " 1", "lots", "1.0.0", ".", "+", "-", "1K", "1ki", "1mi", "1KiB", "1e", "1e1.5", "1E+",
            "1Gi1", "1m1", "1.5.Gi", "Gi", "e3", "1,5", "0x10", "1 Gi", "1\n", "1µ",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn ordering_is_exact() {
        let q = |s| Quantity::parse(s).unwrap();
        assert_eq!(q("1Gi").cmp_value(&q("1G")), Ordering::Greater);
        assert_eq!(q("1000m").cmp_value(&q("1")), Ordering::Equal);
        assert_eq!(q("128Mi").cmp_value(&q("134217728")), Ordering::Equal);
        assert_eq!(q("128Mi").cmp_value(&q("134217729")), Ordering::Less);
        assert_eq!(q("2").cmp_value(&q("1999m")), Ordering::Greater);
    }
}
