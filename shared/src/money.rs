//! Money as Stripe sends it: an integer amount in the currency's minor unit, and the currency. Amounts
//! are never floats; formatting for people knows how many decimals each currency has.

/// Currencies Stripe treats as zero-decimal: the amount is in whole units (¥500 is `500`).
/// <https://docs.stripe.com/currencies#zero-decimal>
const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];
/// Currencies with three decimals (1.000 KWD is `1000`). <https://docs.stripe.com/currencies#three-decimal>
const THREE_DECIMAL: &[&str] = &["bhd", "jod", "kwd", "omr", "tnd"];

/// An amount in minor units with its currency.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Money {
    /// Minor units (cents for USD, yen for JPY, fils for KWD).
    pub amount: i64,
    /// Lowercase ISO 4217 code, as Stripe sends it.
    pub currency: String,
}

impl Money {
    /// `amount` minor units of `currency`.
    pub fn new(amount: i64, currency: impl Into<String>) -> Self {
        Self {
            amount,
            currency: currency.into().to_lowercase(),
        }
    }

    /// Digits after the decimal point for this currency.
    pub fn decimals(&self) -> u32 {
        if ZERO_DECIMAL.contains(&self.currency.as_str()) {
            0
        } else if THREE_DECIMAL.contains(&self.currency.as_str()) {
            3
        } else {
            2
        }
    }
}

impl std::fmt::Display for Money {
    /// `10.99 USD`, `500 JPY`, `1.500 KWD`, `-3.00 EUR`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = self.currency.to_uppercase();
        let decimals = self.decimals();
        let sign = if self.amount < 0 { "-" } else { "" };
        let units = self.amount.unsigned_abs();
        if decimals == 0 {
            return write!(f, "{sign}{units} {code}");
        }
        let scale = 10u64.pow(decimals);
        let (whole, fraction) = (units / scale, units % scale);
        write!(
            f,
            "{sign}{whole}.{fraction:0width$} {code}",
            width = decimals as usize
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_the_currency_minor_unit() {
        assert_eq!(Money::new(1099, "usd").to_string(), "10.99 USD");
        assert_eq!(Money::new(5, "eur").to_string(), "0.05 EUR");
        assert_eq!(Money::new(500, "jpy").to_string(), "500 JPY");
        assert_eq!(Money::new(12000, "KRW").to_string(), "12000 KRW");
        assert_eq!(Money::new(1500, "kwd").to_string(), "1.500 KWD");
        assert_eq!(Money::new(-300, "usd").to_string(), "-3.00 USD");
        assert_eq!(
            Money::new(i64::MIN, "usd").to_string(),
            "-92233720368547758.08 USD"
        );
    }
}
