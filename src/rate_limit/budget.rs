//! Budgets: a key's tokens and money over a period ([`Budget`], [`BudgetPeriod`]), and the
//! integer prices they are charged at ([`UnitPrice`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::auth::{civil_from_days, days_from_civil};
use crate::usage::Price;

const DAY_MS: u64 = 86_400_000;

/// The period a [`Budget`] is counted over: calendar periods in UTC, or a fixed duration.
///
/// Calendar periods start at midnight UTC (`day`), on Monday at midnight UTC (`week`, ISO
/// weeks) or on the first of the month at midnight UTC (`month`). A duration period (`"30d"`,
/// `"12h"`) is aligned on the Unix epoch: periods are `[k·d, (k+1)·d)`, the same on every
/// replica.
///
/// ```
/// use std::time::Duration;
/// use chatgate::rate_limit::BudgetPeriod;
/// assert_eq!("month".parse::<BudgetPeriod>(), Ok(BudgetPeriod::Month));
/// assert_eq!("30d".parse::<BudgetPeriod>(), Ok(BudgetPeriod::Every(Duration::from_secs(30 * 86_400))));
/// // 2024-02-29T12:00:00Z: the month started on 2024-02-01 and ends on 2024-03-01.
/// let now = 1_709_208_000_000;
/// assert_eq!(BudgetPeriod::Month.start(now), 1_706_745_600_000);
/// assert_eq!(BudgetPeriod::Month.end(now), 1_709_251_200_000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BudgetPeriod {
    /// A UTC day.
    Day,
    /// An ISO week (Monday to Sunday, UTC).
    Week,
    /// A calendar month (UTC).
    Month,
    /// A fixed duration (at least one second), aligned on the Unix epoch.
    Every(Duration),
}

/// The civil year and month of days since the epoch.
fn year_month(days: i64) -> (i64, u32) {
    let (y, m, _) = civil_from_days(days);
    (y, m)
}

fn to_ms(days: i64) -> u64 {
    u64::try_from(days).unwrap_or(0) * DAY_MS
}

impl BudgetPeriod {
    fn every_ms(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// The start of the period holding `now` (Unix milliseconds).
    pub fn start(&self, now: u64) -> u64 {
        let days = (now / DAY_MS) as i64;
        match self {
            BudgetPeriod::Day => to_ms(days),
            // 1970-01-01 was a Thursday: Monday is 3 days before.
            BudgetPeriod::Week => to_ms(days - (days + 3).rem_euclid(7)),
            BudgetPeriod::Month => {
                let (y, m) = year_month(days);
                to_ms(days_from_civil(y, m, 1))
            }
            BudgetPeriod::Every(d) => {
                let d = Self::every_ms(*d);
                now / d * d
            }
        }
    }

    /// The end of the period holding `now` (the start of the next one), Unix milliseconds.
    pub fn end(&self, now: u64) -> u64 {
        let start = self.start(now);
        match self {
            BudgetPeriod::Day => start + DAY_MS,
            BudgetPeriod::Week => start + 7 * DAY_MS,
            BudgetPeriod::Month => {
                let (y, m) = year_month((start / DAY_MS) as i64);
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                to_ms(days_from_civil(y, m, 1))
            }
            BudgetPeriod::Every(d) => start.saturating_add(Self::every_ms(*d)),
        }
    }
}

/// `day`, `week`, `month`, or a duration: `<n>d`, `<n>h`, `<n>m`, `<n>s`.
impl FromStr for BudgetPeriod {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "invalid budget period {s:?}: expected `day`, `week`, `month` or a duration \
                 such as `30d`, `12h`, `90m`"
            )
        };
        match s {
            "day" | "daily" => return Ok(BudgetPeriod::Day),
            "week" | "weekly" => return Ok(BudgetPeriod::Week),
            "month" | "monthly" => return Ok(BudgetPeriod::Month),
            _ => {}
        }
        let unit = s.chars().last().ok_or_else(bad)?;
        let secs = match unit {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = s[..s.len() - 1].parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(bad());
        }
        Ok(BudgetPeriod::Every(Duration::from_secs(
            n.checked_mul(secs).ok_or_else(bad)?,
        )))
    }
}

/// Written as it is parsed: `day`, `week`, `month`, `30d`, `12h`, `90m`, `45s`.
impl fmt::Display for BudgetPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BudgetPeriod::Day => f.write_str("day"),
            BudgetPeriod::Week => f.write_str("week"),
            BudgetPeriod::Month => f.write_str("month"),
            BudgetPeriod::Every(d) => {
                let s = d.as_secs();
                if s % 86_400 == 0 {
                    write!(f, "{}d", s / 86_400)
                } else if s % 3_600 == 0 {
                    write!(f, "{}h", s / 3_600)
                } else if s % 60 == 0 {
                    write!(f, "{}m", s / 60)
                } else {
                    write!(f, "{s}s")
                }
            }
        }
    }
}

/// A key's budget: at most `tokens` tokens and `micro_usd` micro-dollars over each `period`.
/// `None` leaves that dimension unlimited.
///
/// Money is kept in integer micro-dollars (1 USD = 1 000 000), so counters add up exactly.
///
/// ```
/// use chatgate::rate_limit::{Budget, BudgetPeriod};
/// let b = Budget::new(BudgetPeriod::Month).tokens(5_000_000).usd(25.0);
/// assert_eq!(b.micro_usd, Some(25_000_000));
/// assert_eq!(b.usd_value(), Some(25.0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Budget {
    /// Tokens (prompt + completion) per period.
    pub tokens: Option<u64>,
    /// Micro-dollars per period.
    pub micro_usd: Option<u64>,
    /// The period.
    pub period: BudgetPeriod,
}

impl Budget {
    /// A budget over `period` that limits nothing yet.
    pub const fn new(period: BudgetPeriod) -> Self {
        Self {
            tokens: None,
            micro_usd: None,
            period,
        }
    }

    /// Sets [`tokens`](Self::tokens).
    pub const fn tokens(mut self, n: u64) -> Self {
        self.tokens = Some(n);
        self
    }

    /// Sets the money budget in dollars (rounded to the micro-dollar; negative is 0).
    pub fn usd(mut self, dollars: f64) -> Self {
        self.micro_usd = Some(usd_to_micro(dollars));
        self
    }

    /// The money budget in dollars.
    pub fn usd_value(&self) -> Option<f64> {
        self.micro_usd.map(|m| m as f64 / 1_000_000.0)
    }

    /// Whether it limits nothing.
    pub const fn is_unlimited(&self) -> bool {
        self.tokens.is_none() && self.micro_usd.is_none()
    }
}

/// Dollars to micro-dollars (rounded; negative and NaN are 0).
pub(crate) fn usd_to_micro(dollars: f64) -> u64 {
    let m = (dollars * 1_000_000.0).round();
    if m.is_nan() || m <= 0.0 {
        0
    } else if m >= u64::MAX as f64 {
        u64::MAX
    } else {
        m as u64
    }
}

/// A model's price per token in nano-dollars (integers, so costs add up exactly):
/// `$X` per million tokens is `X × 1000` nano-dollars per token.
///
/// ```
/// use chatgate::rate_limit::UnitPrice;
/// use chatgate::usage::Price;
/// let p = UnitPrice::from(Price { input_per_million: 0.15, output_per_million: 0.60 });
/// assert_eq!((p.input_nano_usd, p.output_nano_usd), (150, 600));
/// // 1000 prompt + 500 completion tokens: 150 000 + 300 000 nano-dollars = 450 micro-dollars.
/// assert_eq!(p.micro_usd(1000, 500), 450);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UnitPrice {
    /// Nano-dollars per prompt token.
    pub input_nano_usd: u64,
    /// Nano-dollars per completion token.
    pub output_nano_usd: u64,
}

impl UnitPrice {
    /// The cost of these counts in micro-dollars, rounded up.
    pub fn micro_usd(&self, prompt_tokens: u64, completion_tokens: u64) -> u64 {
        let nano = u128::from(prompt_tokens) * u128::from(self.input_nano_usd)
            + u128::from(completion_tokens) * u128::from(self.output_nano_usd);
        u64::try_from(nano.div_ceil(1000)).unwrap_or(u64::MAX)
    }

    /// The cost of `total` tokens whose split is unknown, at the higher of the two prices (an
    /// upper bound).
    pub fn micro_usd_upper(&self, total: u64) -> u64 {
        let nano = u128::from(total) * u128::from(self.input_nano_usd.max(self.output_nano_usd));
        u64::try_from(nano.div_ceil(1000)).unwrap_or(u64::MAX)
    }
}

impl From<Price> for UnitPrice {
    fn from(p: Price) -> Self {
        // $X per million = X micro-dollars per token = 1000 X nano-dollars per token.
        Self {
            input_nano_usd: usd_to_micro(p.input_per_million / 1000.0),
            output_nano_usd: usd_to_micro(p.output_per_million / 1000.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        // 2024-02-29T12:00:00Z, a Thursday.
        let now = 1_709_208_000_000;
        assert_eq!(BudgetPeriod::Day.start(now), 1_709_164_800_000);
        assert_eq!(BudgetPeriod::Day.end(now), 1_709_251_200_000);
        // Monday 2024-02-26.
        assert_eq!(BudgetPeriod::Week.start(now), 1_708_905_600_000);
        assert_eq!(BudgetPeriod::Week.end(now), 1_709_510_400_000);
        // December rolls over into January.
        let dec = 1_735_000_000_000; // 2024-12-24
        assert_eq!(BudgetPeriod::Month.start(dec), 1_733_011_200_000);
        assert_eq!(BudgetPeriod::Month.end(dec), 1_735_689_600_000);
        assert_eq!(
            BudgetPeriod::Month.start(1_735_689_600_000),
            1_735_689_600_000
        );
        let p: BudgetPeriod = "90m".parse().unwrap_or(BudgetPeriod::Day);
        assert_eq!(p.start(now), now / 5_400_000 * 5_400_000);
        assert_eq!(p.end(now) - p.start(now), 5_400_000);
        for s in ["day", "week", "month", "30d", "12h", "90m", "45s"] {
            assert_eq!(
                s.parse::<BudgetPeriod>().map(|p| p.to_string()),
                Ok(s.into())
            );
        }
        for s in ["", "d", "0d", "3w", "-1d", "year"] {
            assert!(s.parse::<BudgetPeriod>().is_err(), "{s}");
        }
    }
}
