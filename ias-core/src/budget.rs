//! The budget rule: does a request fit in what is left?
//!
//! The governor applies [`first_exceeded`] to dry-run checks; grants come
//! from budget leases ([`crate::lease`]), which apply the same rule.

use serde::{Deserialize, Serialize};

/// Tokens spent and tokens held by open reservations, for one scope and period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Counter {
    /// Tokens charged by settled requests.
    pub used: i64,
    /// Tokens held by reservations not yet settled or released.
    pub reserved: i64,
}

impl Counter {
    /// Tokens spoken for: used plus reserved.
    pub fn committed(&self) -> i64 {
        self.used.saturating_add(self.reserved)
    }

    /// Tokens of `limit` neither used nor reserved; never negative.
    pub fn left_of(&self, limit: i64) -> i64 {
        limit.saturating_sub(self.committed()).max(0)
    }
}

/// The limits and counters that decide one request, read together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetState {
    /// The organization's monthly budget.
    pub org_limit: i64,
    /// The organization's counter for the period.
    pub org: Counter,
    /// The user's own monthly limit; `None` means only the org budget applies.
    pub user_limit: Option<i64>,
    /// The user's counter for the period.
    pub user: Counter,
}

impl BudgetState {}

/// Which limit a request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitScope {
    /// The organization's monthly budget.
    Org,
    /// The user's own limit.
    User,
    /// The API key's own limit (rate limits only).
    Key,
}

impl LimitScope {
    /// The stable machine-readable name: `org`, `user` or `key`.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitScope::Org => "org",
            LimitScope::User => "user",
            LimitScope::Key => "key",
        }
    }

    /// The scope named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "org" => Some(LimitScope::Org),
            "user" => Some(LimitScope::User),
            "key" => Some(LimitScope::Key),
            _ => None,
        }
    }
}

/// A limit that a request does not fit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exceeded {
    /// Which limit.
    pub scope: LimitScope,
    /// The limit's size.
    pub limit: i64,
    /// Tokens already used in the period.
    pub used: i64,
    /// Tokens held by open reservations.
    pub reserved: i64,
}

impl Exceeded {
    /// Tokens of the limit neither used nor reserved; never negative.
    pub fn left(&self) -> i64 {
        Counter {
            used: self.used,
            reserved: self.reserved,
        }
        .left_of(self.limit)
    }
}

/// The first limit, org before user, that `requested` tokens do not fit in.
///
/// A request fits when `used + reserved + max(requested, 1) <= limit`: every
/// request needs room for at least one token, so a request that estimates
/// zero is still refused once a budget is spent.
pub fn first_exceeded(state: &BudgetState, requested: i64) -> Option<Exceeded> {
    let need = requested.max(1);
    let fits = |limit: i64, counter: &Counter| need <= counter.left_of(limit);
    if !fits(state.org_limit, &state.org) {
        return Some(Exceeded {
            scope: LimitScope::Org,
            limit: state.org_limit,
            used: state.org.used,
            reserved: state.org.reserved,
        });
    }
    match state.user_limit {
        Some(limit) if !fits(limit, &state.user) => Some(Exceeded {
            scope: LimitScope::User,
            limit,
            used: state.user.used,
            reserved: state.user.reserved,
        }),
        _ => None,
    }
}

/// The result of settling a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// Tokens that were held.
    pub reserved: i64,
    /// Tokens charged: the real usage, even where it exceeds what was held.
    pub charged: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(org_used: i64, user_limit: Option<i64>, user_used: i64) -> BudgetState {
        BudgetState {
            org_limit: 100,
            org: Counter {
                used: org_used,
                reserved: 0,
            },
            user_limit,
            user: Counter {
                used: user_used,
                reserved: 0,
            },
        }
    }

    #[test]
    fn exactly_what_is_left_fits() {
        assert_eq!(first_exceeded(&state(60, None, 0), 40), None);
        let over = first_exceeded(&state(60, None, 0), 41).unwrap();
        assert_eq!(
            (over.scope, over.limit, over.used),
            (LimitScope::Org, 100, 60)
        );
    }

    #[test]
    fn reservations_count_against_the_budget() {
        let mut s = state(50, None, 0);
        s.org.reserved = 50;
        assert!(first_exceeded(&s, 1).is_some());
    }

    #[test]
    fn user_limit_applies_only_when_set() {
        assert_eq!(first_exceeded(&state(0, None, 90), 50), None);
        let over = first_exceeded(&state(0, Some(95), 90), 10).unwrap();
        assert_eq!(over.scope, LimitScope::User);
    }

    #[test]
    fn a_spent_budget_refuses_even_zero_estimates() {
        assert!(first_exceeded(&state(100, None, 0), 0).is_some());
        assert!(first_exceeded(&state(99, None, 0), 0).is_none());
    }
}
