//! The publishing leases one worker holds, kept alive while it works.
//!
//! A claim leases posts for a short time (20 s by default) instead of long
//! enough for the whole batch: a worker that dies (a killed replica, a
//! crashed instance) stops renewing, and its posts, with their accounts, are
//! claimable again within one lease. A live worker renews every lease it
//! still holds, the post it is publishing and the ones of its batch that
//! wait, at least every third of a lease: before each outside call and
//! between posts. Each call is bounded by the time the lease has left
//! ([`crate::deadline::Deadline`]), so no lease can run out during a call.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;
use shared::Error;
use shared::db::Database;
use spin_sdk::pg4::ParameterValue;
use uuid::Uuid;

use crate::sql;

/// One lease still held: the post and its fencing token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldLease {
    /// The scheduled post.
    pub id: Uuid,
    /// Its lease token.
    pub lease_token: i64,
}

#[derive(Debug, Deserialize)]
struct Renewed {
    id: Uuid,
    lease_token: i64,
    lease_remaining_ms: i64,
}

/// The leases of one worker's batch, renewed while it works.
pub struct HeldLeases<'a> {
    db: &'a Database,
    lease: Duration,
    held: RefCell<Vec<HeldLease>>,
    renewed_at: Cell<Instant>,
    /// The lease left of each post at its last renewal, by id.
    remaining: RefCell<Vec<(Uuid, i64, Instant)>>,
}

impl<'a> HeldLeases<'a> {
    /// The leases just claimed for `lease` (the claim counts as a renewal).
    pub fn new(db: &'a Database, lease: Duration, claimed: Vec<HeldLease>) -> Self {
        HeldLeases {
            db,
            lease,
            held: RefCell::new(claimed),
            renewed_at: Cell::new(Instant::now()),
            remaining: RefCell::new(Vec::new()),
        }
    }

    /// The lease each renewal asks for.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Whether `id` is still held under `lease_token`.
    pub fn holds(&self, id: Uuid, lease_token: i64) -> bool {
        self.held
            .borrow()
            .iter()
            .any(|h| h.id == id && h.lease_token == lease_token)
    }

    /// Stops renewing `id` (its outcome is recorded).
    pub fn release(&self, id: Uuid) {
        self.held.borrow_mut().retain(|h| h.id != id);
        self.remaining.borrow_mut().retain(|(r, _, _)| *r != id);
    }

    /// Renews every held lease when a third of a lease has passed since the
    /// last renewal. Leases the database no longer grants (taken over
    /// after a stall) are dropped. A database error keeps the leases as
    /// they are: the deadlines still end every call before they run out.
    pub fn renew_if_due(&self) {
        if self.renewed_at.get().elapsed() < self.lease / 3 {
            return;
        }
        // Ignoring the error is deliberate (see above); the next renewal
        // tries again.
        let _ignored = self.renew();
    }

    /// Renews every held lease now; answers how many are still held.
    pub fn renew(&self) -> Result<usize, Error> {
        let items: Vec<serde_json::Value> = self
            .held
            .borrow()
            .iter()
            .map(|h| json!({ "id": h.id, "lease_token": h.lease_token }))
            .collect();
        if items.is_empty() {
            self.renewed_at.set(Instant::now());
            return Ok(0);
        }
        let asked = Instant::now();
        let seconds = i32::try_from(self.lease.as_secs().max(1)).unwrap_or(900);
        let renewed: Vec<Renewed> = self.db.call(
            &sql::RENEW_LEASES,
            &[
                ParameterValue::Jsonb(serde_json::Value::Array(items).to_string().into_bytes()),
                ParameterValue::Int32(seconds),
            ],
        )?;
        self.held.borrow_mut().retain(|h| {
            renewed
                .iter()
                .any(|r| r.id == h.id && r.lease_token == h.lease_token)
        });
        *self.remaining.borrow_mut() = renewed
            .iter()
            .map(|r| (r.id, r.lease_remaining_ms, asked))
            .collect();
        self.renewed_at.set(asked);
        Ok(self.held.borrow().len())
    }

    /// The lease `id` has left by the last renewal, in milliseconds (as
    /// the database counted it, less the time since), if it was renewed.
    pub fn remaining_ms(&self, id: Uuid) -> Option<i64> {
        self.remaining
            .borrow()
            .iter()
            .find(|(r, _, _)| *r == id)
            .map(|(_, ms, at)| {
                ms.saturating_sub(i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX))
            })
    }
}
