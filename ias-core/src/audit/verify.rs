//! Checking the audit log's hash chain, entry by entry, oldest first.
//!
//! Each entry stores the previous entry's hash and a hash of its own
//! fields ([`chain_hash`]). Walking from the first entry, a row edited in
//! place no longer matches its own hash; a row removed leaves a gap in the
//! ids (which only ever grow by one); a row edited *and* re-hashed no longer
//! matches the hash that the next entry recorded for it.
//!
//! # Limitations
//!
//! The chain is not keyed: someone who can write the database file and
//! recomputes every hash from the changed entry to the end, or who removes
//! only the newest entries, leaves a chain that is consistent again. Note
//! the head that a verification reports (id and hash) somewhere the
//! database's writers cannot reach, and pass it back as the anchor of a
//! later verification: the anchored entry must still be there, unchanged.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::audit::{AuditEntry, GENESIS_HASH, chain_hash};

/// One row of the audit log as read for verification.
#[derive(Debug, Clone, PartialEq)]
pub enum AuditLink {
    /// A row whose fields could be read.
    Entry(AuditEntry),
    /// A row whose fields cannot be read back (a value of the wrong type,
    /// `changes` that is not JSON): it was changed outside ias.
    Unreadable {
        /// The row's id.
        id: i64,
        /// What could not be read.
        reason: String,
    },
}

impl AuditLink {
    /// The link for row `id`, as a store read it: its fields (or why they
    /// cannot be read) and the `changes` text exactly as stored.
    ///
    /// The hash covers the changes as they were written; stored text that
    /// parses to the same value but differs (a repeated key, say) was edited,
    /// and SQL reading the text may see other values, so it is unreadable.
    pub fn from_stored(
        id: i64,
        fields: std::result::Result<AuditEntry, String>,
        stored_changes: Option<&str>,
    ) -> AuditLink {
        match fields {
            Ok(entry) if stored_changes != Some(entry.record.changes.to_string().as_str()) => {
                AuditLink::Unreadable {
                    id,
                    reason: "its changes are not stored as they were written".to_owned(),
                }
            }
            Ok(entry) => AuditLink::Entry(entry),
            Err(reason) => AuditLink::Unreadable { id, reason },
        }
    }

    /// The row's id.
    pub fn id(&self) -> i64 {
        match self {
            AuditLink::Entry(entry) => entry.id,
            AuditLink::Unreadable { id, .. } => *id,
        }
    }
}

/// An entry's id and hash: the newest entry checked, or an anchor noted earlier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditHead {
    /// The entry's id.
    pub id: i64,
    /// The entry's hash.
    pub hash: String,
}

/// How the chain was broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum BreakKind {
    /// The entry's fields or hash were changed.
    Changed,
    /// The entry is missing.
    Removed,
}

/// The first entry found changed or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChainBreak {
    /// The entry's id.
    pub id: i64,
    /// Changed or removed.
    pub kind: BreakKind,
    /// How it shows.
    pub reason: String,
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            BreakKind::Changed => "changed",
            BreakKind::Removed => "removed",
        };
        write!(f, "entry {} was {kind}: {}", self.id, self.reason)
    }
}

/// The outcome of verifying the chain: a value, whether intact or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditVerification {
    /// Entries checked and found intact before the first break, if any.
    pub checked: u64,
    /// The newest intact entry.
    pub head: Option<AuditHead>,
    /// The first entry changed or removed; `None` when the chain is intact.
    pub broken: Option<ChainBreak>,
}

impl AuditVerification {
    /// Whether no change or removal was found.
    pub fn is_intact(&self) -> bool {
        self.broken.is_none()
    }
}

/// Walks the chain one link at a time, oldest first.
#[derive(Debug)]
pub struct ChainVerifier {
    anchor: Option<AuditHead>,
    anchor_seen: bool,
    next_id: i64,
    prev_hash: String,
    checked: u64,
    head: Option<AuditHead>,
}

impl ChainVerifier {
    /// A verifier for a chain starting at entry 1, which must contain `anchor` if given.
    pub fn new(anchor: Option<AuditHead>) -> Self {
        ChainVerifier {
            anchor,
            anchor_seen: false,
            next_id: 1,
            prev_hash: GENESIS_HASH.to_owned(),
            checked: 0,
            head: None,
        }
    }

    /// Checks the next link; `Err` names the first entry changed or removed.
    pub fn push(&mut self, link: &AuditLink) -> Result<(), ChainBreak> {
        if link.id() < self.next_id {
            let reason = "its id is out of sequence: ids start at 1 and go up by one".to_owned();
            return Err(changed(link.id(), reason));
        }
        if link.id() != self.next_id {
            let reason = format!(
                "the log goes on from entry {} to entry {}",
                self.next_id - 1,
                link.id()
            );
            return Err(removed(self.next_id, reason));
        }
        let entry = match link {
            AuditLink::Entry(entry) => entry,
            AuditLink::Unreadable { id, reason } => {
                return Err(changed(*id, format!("its fields cannot be read: {reason}")));
            }
        };
        self.check_entry(entry)?;
        self.next_id += 1;
        self.prev_hash = entry.hash.clone();
        self.checked += 1;
        self.head = Some(AuditHead {
            id: entry.id,
            hash: entry.hash.clone(),
        });
        Ok(())
    }

    fn check_entry(&mut self, entry: &AuditEntry) -> Result<(), ChainBreak> {
        let own = chain_hash(entry.id, &entry.record, entry.target_id, &entry.prev_hash);
        if own != entry.hash {
            return Err(changed(
                entry.id,
                "its fields no longer match its hash".into(),
            ));
        }
        if entry.prev_hash != self.prev_hash {
            return Err(self.previous_changed(entry));
        }
        if let Some(anchor) = self.anchor.as_ref().filter(|a| a.id == entry.id) {
            if anchor.hash != entry.hash {
                return Err(changed(entry.id, "its hash differs from the anchor".into()));
            }
            self.anchor_seen = true;
        }
        Ok(())
    }

    /// The entry before `entry` was re-hashed after a change (or `entry`'s link was).
    fn previous_changed(&self, entry: &AuditEntry) -> ChainBreak {
        if entry.id == 1 {
            return changed(1, "it does not start from the genesis hash".into());
        }
        let reason = format!("its hash is not the one entry {} recorded for it", entry.id);
        changed(entry.id - 1, reason)
    }

    /// The verification of the links pushed so far, ending with `broken` if given.
    pub fn finish(self, broken: Option<ChainBreak>) -> AuditVerification {
        let broken = broken.or_else(|| self.anchor_missing());
        AuditVerification {
            checked: self.checked,
            head: self.head,
            broken,
        }
    }

    fn anchor_missing(&self) -> Option<ChainBreak> {
        let anchor = self.anchor.as_ref().filter(|_| !self.anchor_seen)?;
        let last = self.next_id - 1;
        let reason = format!("the log ends at entry {last}, before the anchor");
        Some(removed(anchor.id, reason))
    }
}

fn changed(id: i64, reason: String) -> ChainBreak {
    ChainBreak {
        id,
        kind: BreakKind::Changed,
        reason,
    }
}

fn removed(id: i64, reason: String) -> ChainBreak {
    ChainBreak {
        id,
        kind: BreakKind::Removed,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditRecord, Source};

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|id| {
                let record = AuditRecord {
                    at: "2026-12-01T00:00:00Z".parse().unwrap(),
                    actor: "operator:root".into(),
                    source: Source::Cli,
                    action: "org.create".into(),
                    org_id: None,
                    target: format!("org:o{id}"),
                    changes: serde_json::json!({}),
                };
                let hash = chain_hash(id, &record, None, &prev);
                let entry = AuditEntry {
                    id,
                    record,
                    target_id: None,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                entry
            })
            .collect()
    }

    fn verify(entries: &[AuditEntry], anchor: Option<AuditHead>) -> AuditVerification {
        let mut verifier = ChainVerifier::new(anchor);
        let broken = entries
            .iter()
            .map(|e| verifier.push(&AuditLink::Entry(e.clone())))
            .find_map(Result::err);
        verifier.finish(broken)
    }

    fn rehash(entry: &mut AuditEntry) {
        entry.hash = chain_hash(entry.id, &entry.record, entry.target_id, &entry.prev_hash);
    }

    #[test]
    fn an_intact_chain_reports_its_head() {
        let entries = chain(3);
        let result = verify(&entries, None);
        assert!(result.is_intact());
        assert_eq!(result.checked, 3);
        assert_eq!(result.head.unwrap().hash, entries[2].hash);
        assert!(verify(&[], None).is_intact());
    }

    #[test]
    fn an_edited_entry_is_named() {
        let mut entries = chain(4);
        entries[1].record.actor = "someone else".into();
        let broken = verify(&entries, None).broken.unwrap();
        assert_eq!((broken.id, broken.kind), (2, BreakKind::Changed));
    }

    #[test]
    fn an_edited_and_rehashed_entry_is_named() {
        let mut entries = chain(4);
        entries[1].record.actor = "someone else".into();
        rehash(&mut entries[1]);
        let broken = verify(&entries, None).broken.unwrap();
        assert_eq!((broken.id, broken.kind), (2, BreakKind::Changed));
    }

    #[test]
    fn a_removed_entry_is_named() {
        let mut entries = chain(4);
        entries.remove(2);
        let result = verify(&entries, None);
        let broken = result.broken.unwrap();
        assert_eq!((broken.id, broken.kind), (3, BreakKind::Removed));
        assert_eq!(result.checked, 2);
        let mut first_gone = chain(2);
        first_gone.remove(0);
        assert_eq!(verify(&first_gone, None).broken.unwrap().id, 1);
    }

    #[test]
    fn an_anchor_catches_a_removed_tail() {
        let entries = chain(4);
        let anchor = AuditHead {
            id: 4,
            hash: entries[3].hash.clone(),
        };
        assert!(verify(&entries, Some(anchor.clone())).is_intact());
        let broken = verify(&entries[..3], Some(anchor)).broken.unwrap();
        assert_eq!((broken.id, broken.kind), (4, BreakKind::Removed));
        let wrong = AuditHead {
            id: 2,
            hash: "0".repeat(64),
        };
        let broken = verify(&entries, Some(wrong)).broken.unwrap();
        assert_eq!((broken.id, broken.kind), (2, BreakKind::Changed));
    }

    #[test]
    fn an_unreadable_row_is_changed() {
        let mut verifier = ChainVerifier::new(None);
        let link = AuditLink::Unreadable {
            id: 1,
            reason: "changes is not JSON".into(),
        };
        let broken = verifier.push(&link).unwrap_err();
        assert_eq!(
            broken.to_string(),
            "entry 1 was changed: its fields cannot be read: changes is not JSON"
        );
    }
}
