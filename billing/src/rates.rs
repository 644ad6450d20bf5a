//! Rate cards: prices per vCPU-second and per GiB-second, each effective
//! from a whole UTC hour until the next card. Owns their validation, the
//! lookup of the card in force at a second, and the `rate_cards` SQL.
//!
//! Why whole hours and never in the past: usage records lie within one UTC
//! hour and are stamped with the card in force at their start when written,
//! so a card can only change prices at a record boundary, and never for
//! records already written.

use crate::error::BillingError;
use crate::rules::Rate;
use chrono::{DateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};
use skiff_core::FieldError;
use sqlx::PgConnection;

/// Defaults close to Azure Container Instances' Linux prices:
/// 11_300 nano-units per vCPU-second (about 0.0407 per vCPU-hour) and
/// 1_240 nano-units per GiB-second (about 0.00446 per GiB-hour).
pub const DEFAULT_RATE: Rate = Rate {
    nano_per_vcpu_second: 11_300,
    nano_per_gib_second: 1_240,
};

/// One row of `rate_cards`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct RateCard {
    pub effective_from: DateTime<Utc>,
    pub nano_per_vcpu_second: i64,
    pub nano_per_gib_second: i64,
}

impl RateCard {
    pub fn rate(&self) -> Rate {
        Rate {
            nano_per_vcpu_second: self.nano_per_vcpu_second,
            nano_per_gib_second: self.nano_per_gib_second,
        }
    }

    /// Validates a card to be added at time `now`: prices in range,
    /// `effective_from` at a whole UTC hour and not before `now`.
    pub fn validate_new(&self, now: DateTime<Utc>) -> Result<(), FieldError> {
        self.rate().validate()?;
        let t = self.effective_from;
        if t.minute() != 0 || t.second() != 0 || t.nanosecond() != 0 {
            return Err(FieldError::new(
                "effective_from",
                format!("must be at a whole UTC hour, got {}", t.to_rfc3339()),
            ));
        }
        if t < now {
            return Err(FieldError::new(
                "effective_from",
                format!(
                    "must not be in the past (records already written keep their price), got {}",
                    t.to_rfc3339()
                ),
            ));
        }
        Ok(())
    }
}

/// The rate in force at epoch second `at_s`, from cards sorted by
/// `effective_from` ascending.
pub fn rate_at(cards: &[RateCard], at_s: i64) -> Option<Rate> {
    cards
        .iter()
        .rev()
        .find(|c| c.effective_from.timestamp() <= at_s)
        .map(RateCard::rate)
}

/// Every rate card, oldest first.
pub async fn rates(conn: &mut PgConnection) -> Result<Vec<RateCard>, BillingError> {
    Ok(sqlx::query_as::<_, RateCard>(
        "SELECT effective_from, nano_per_vcpu_second, nano_per_gib_second
           FROM rate_cards ORDER BY effective_from",
    )
    .fetch_all(conn)
    .await?)
}

/// Adds a card (admin). Validation errors name the field; a card at the same
/// `effective_from` already present is an `effective_from` error.
pub async fn add_rate(conn: &mut PgConnection, card: &RateCard) -> Result<(), BillingError> {
    card.validate_new(Utc::now())?;
    let inserted = sqlx::query(
        "INSERT INTO rate_cards (effective_from, nano_per_vcpu_second, nano_per_gib_second)
         VALUES ($1, $2, $3) ON CONFLICT (effective_from) DO NOTHING",
    )
    .bind(card.effective_from)
    .bind(card.nano_per_vcpu_second)
    .bind(card.nano_per_gib_second)
    .execute(conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(BillingError::RateTaken(card.effective_from));
    }
    Ok(())
}

/// Inserts `rate` effective from the Unix epoch if `rate_cards` is empty
/// (called by the API at start with the configured defaults). Returns
/// whether it inserted. Safe when several instances start at once.
pub async fn ensure_default_rate(
    conn: &mut PgConnection,
    rate: Rate,
) -> Result<bool, BillingError> {
    rate.validate()?;
    let inserted = sqlx::query(
        "INSERT INTO rate_cards (effective_from, nano_per_vcpu_second, nano_per_gib_second)
         SELECT 'epoch'::timestamptz, $1, $2
          WHERE NOT EXISTS (SELECT 1 FROM rate_cards)
         ON CONFLICT (effective_from) DO NOTHING",
    )
    .bind(rate.nano_per_vcpu_second)
    .bind(rate.nano_per_gib_second)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn card(h: i64, v: i64) -> RateCard {
        RateCard {
            effective_from: Utc.timestamp_opt(h * 3600, 0).unwrap(),
            nano_per_vcpu_second: v,
            nano_per_gib_second: 1,
        }
    }

    #[test]
    fn picks_the_latest_card_in_force() {
        let cards = [card(0, 1), card(10, 2), card(20, 3)];
        assert_eq!(rate_at(&cards, 0).unwrap().nano_per_vcpu_second, 1);
        assert_eq!(
            rate_at(&cards, 10 * 3600 - 1).unwrap().nano_per_vcpu_second,
            1
        );
        assert_eq!(rate_at(&cards, 10 * 3600).unwrap().nano_per_vcpu_second, 2);
        assert_eq!(rate_at(&cards, 99 * 3600).unwrap().nano_per_vcpu_second, 3);
        assert_eq!(rate_at(&cards[1..], 5), None);
    }

    #[test]
    fn validates_new_cards() {
        let now = Utc.timestamp_opt(10 * 3600 + 5, 0).unwrap();
        assert_eq!(card(11, 5).validate_new(now), Ok(()));
        assert_eq!(
            card(10, 5).validate_new(now).unwrap_err().field,
            "effective_from"
        );
        let mut off_hour = card(11, 5);
        off_hour.effective_from += chrono::Duration::seconds(1);
        assert_eq!(
            off_hour.validate_new(now).unwrap_err().field,
            "effective_from"
        );
        assert_eq!(
            card(11, -1).validate_new(now).unwrap_err().field,
            "nano_per_vcpu_second"
        );
    }
}
