//! Unique jobs: at most one waiting or running job per key in a queue.
//!
//! An enqueue whose job carries a key (`.key("invoice-42")`, or one key per job of a batch
//! with `.keys([...])`) creates no second job while a job of the same queue with that key is
//! waiting, delayed or leased; with a `unique_for` window, also while one finished (archived)
//! within the window. What the caller gets for such a job is [`OnDuplicate`]'s choice, made
//! here and nowhere else: the existing job's id (the default), or [`Error::DuplicateJob`].
//!
//! Keys are scoped to their queue. A job that becomes a dead letter gives its key up (a new
//! job with the key may be enqueued), and keeps it: requeued while another job holds the key,
//! it stays a dead letter. The backends guarantee one job per key against concurrent
//! producers (a partial unique index on the job table, and a race-free insert); this module
//! validates, folds a batch's repeated keys into one job, and applies the policy.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::limits::{validate_key, validate_unique_for};
use crate::store::{EnqueueParams, On, Placed, Store, UniqueParams};

/// What an enqueue gets for a job whose key is taken (a job with that key is waiting or
/// running in the queue, or finished within the enqueue's `unique_for` window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDuplicate {
    /// The id of the job that holds the key, in that job's place in the returned ids; no
    /// new job is created. The default: an enqueue with a key is idempotent, so a producer
    /// that retries after a lost connection, or two that race, get one job and its id.
    #[default]
    Existing,
    /// [`Error::DuplicateJob`] carrying the existing job's id and the key; nothing of the
    /// enqueue is written (for a batch: no job of it).
    Error,
}

impl OnDuplicate {
    /// The name used in Python and in error messages: `"existing"` or `"error"`.
    pub fn as_str(self) -> &'static str {
        match self {
            OnDuplicate::Existing => "existing",
            OnDuplicate::Error => "error",
        }
    }
}

impl FromStr for OnDuplicate {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "existing" => Ok(OnDuplicate::Existing),
            "error" => Ok(OnDuplicate::Error),
            other => Err(Error::validation(
                "on_duplicate",
                format!(
                    "must be \"existing\" (return the id of the job holding the key) or \
                     \"error\" (raise DuplicateJob), got {}",
                    crate::error::preview(other)
                ),
            )),
        }
    }
}

/// The unique-job options of one enqueue, as the builder collected them.
#[derive(Debug, Default)]
pub(crate) struct UniqueOptions {
    /// `.key(k)`: the key of the enqueue's one job.
    pub key: Option<String>,
    /// `.keys([...])`: one key (or none) per job, in order.
    pub keys: Option<Vec<Option<String>>>,
    pub on_duplicate: Option<OnDuplicate>,
    pub unique_for: Option<Duration>,
}

/// Checked options: one key (or none) per job.
pub(crate) struct Checked {
    keys: Vec<Option<String>>,
    window: Option<Duration>,
    policy: OnDuplicate,
}

impl UniqueOptions {
    /// Check the options against the number of jobs. `Ok(None)`: no job has a key, so the
    /// enqueue is a plain one.
    pub(crate) fn check(self, jobs: usize) -> Result<Option<Checked>> {
        let keys = match (self.key, self.keys) {
            (Some(_), Some(_)) => {
                return Err(Error::validation(
                    "key",
                    "give either one key (.key / key=) for a single job, or one key per job \
                     (.keys / keys=), not both",
                ))
            }
            (Some(k), None) => {
                if jobs != 1 {
                    return Err(Error::validation(
                        "key",
                        format!(
                            "one key was given for {jobs} jobs; a key names one job: give each \
                             job its own with .keys([...]) (keys= in Python)"
                        ),
                    ));
                }
                Some(vec![Some(k)])
            }
            (None, Some(ks)) => {
                if ks.len() != jobs {
                    return Err(Error::validation(
                        "keys",
                        format!(
                            "{} keys were given for {jobs} jobs; give one key (or None) per job, \
                             in order",
                            ks.len()
                        ),
                    ));
                }
                Some(ks)
            }
            (None, None) => None,
        };
        let Some(keys) = keys else {
            if self.unique_for.is_some() || self.on_duplicate.is_some() {
                let field = if self.unique_for.is_some() {
                    "unique_for"
                } else {
                    "on_duplicate"
                };
                return Err(Error::validation(
                    field,
                    "applies to jobs with a unique key: give key= (or keys= for a batch)",
                ));
            }
            return Ok(None);
        };
        for k in keys.iter().flatten() {
            validate_key(if jobs == 1 { "key" } else { "keys" }, k)?;
        }
        if let Some(w) = self.unique_for {
            validate_unique_for(w)?;
        }
        if keys.iter().all(Option::is_none) {
            return Ok(None);
        }
        Ok(Some(Checked {
            keys,
            window: self.unique_for,
            policy: self.on_duplicate.unwrap_or_default(),
        }))
    }
}

/// Where each job of the batch goes: sent to the backend as row `i`, or the same job as an
/// earlier one with the same key.
enum Slot {
    Sent(usize),
    SameAs(usize),
}

/// Enqueue jobs of which at least one has a key; the ids in the jobs' order (a job whose key
/// was taken gets the holder's id, see [`OnDuplicate`]).
pub(crate) async fn enqueue_keyed(
    store: &Store,
    p: EnqueueParams<'_>,
    c: Checked,
    on: On<'_>,
) -> Result<Vec<i64>> {
    let n = p.payloads.len();
    // A batch's repeated keys are one job: the first of them.
    let mut first: HashMap<&str, usize> = HashMap::new();
    let mut slots = Vec::with_capacity(n);
    let mut sent = 0;
    for (i, k) in c.keys.iter().enumerate() {
        if let Some(k) = k {
            if let Some(&j) = first.get(k.as_str()) {
                if c.policy == OnDuplicate::Error {
                    return Err(Error::validation(
                        "keys",
                        format!(
                            "the batch gives the key {} to jobs {j} and {i} (counting from \
                             0); with on_duplicate \"error\" each job of a batch needs a key of \
                             its own (with \"existing\", the later ones get the first one's id)",
                            crate::error::preview(k)
                        ),
                    ));
                }
                slots.push(Slot::SameAs(j));
                continue;
            }
            first.insert(k, i);
        }
        slots.push(Slot::Sent(sent));
        sent += 1;
    }
    let (payloads, keys): (Vec<String>, Vec<Option<String>>) = if sent == n {
        (p.payloads, c.keys.clone())
    } else {
        p.payloads
            .into_iter()
            .zip(c.keys.iter().cloned())
            .zip(&slots)
            .filter(|(_, s)| matches!(s, Slot::Sent(_)))
            .map(|(pk, _)| pk)
            .unzip()
    };
    let placed = store
        .backend_impl()
        .enqueue_unique(
            EnqueueParams { payloads, ..p },
            UniqueParams {
                keys: &keys,
                window: c.window,
                only_new: c.policy == OnDuplicate::Error,
            },
            on,
        )
        .await?;
    if placed.len() != keys.len() {
        return Err(Error::Database {
            code: None,
            message: format!("the backend placed {} of {} jobs", placed.len(), keys.len()),
        });
    }
    if c.policy == OnDuplicate::Error {
        if let Some((i, id)) = placed.iter().enumerate().find_map(|(i, p)| match p {
            Placed::Existing(id) => Some((i, *id)),
            _ => None,
        }) {
            return Err(Error::DuplicateJob {
                existing_id: id,
                key: keys[i].clone().unwrap_or_default(),
            });
        }
    }
    let mut sent_ids = Vec::with_capacity(placed.len());
    for p in placed {
        match p {
            Placed::New(id) | Placed::Existing(id) => sent_ids.push(id),
            Placed::NotWritten => {
                return Err(Error::Database {
                    code: None,
                    message: "a keyed enqueue was not written, yet no key was taken".into(),
                })
            }
        }
    }
    let mut ids: Vec<i64> = Vec::with_capacity(n);
    for s in &slots {
        let id = match *s {
            Slot::Sent(j) => sent_ids[j],
            Slot::SameAs(i) => ids[i],
        };
        ids.push(id);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names() {
        assert_eq!(
            "existing".parse::<OnDuplicate>().unwrap(),
            OnDuplicate::Existing
        );
        assert_eq!("error".parse::<OnDuplicate>().unwrap(), OnDuplicate::Error);
        assert_eq!(OnDuplicate::default(), OnDuplicate::Existing);
        for bad in ["", "Error", "ignore", "replace"] {
            assert!(
                matches!(
                    bad.parse::<OnDuplicate>(),
                    Err(Error::Validation {
                        field: "on_duplicate",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    fn opts(key: Option<&str>, keys: Option<Vec<Option<&str>>>) -> UniqueOptions {
        UniqueOptions {
            key: key.map(str::to_owned),
            keys: keys.map(|ks| ks.into_iter().map(|k| k.map(str::to_owned)).collect()),
            ..Default::default()
        }
    }

    fn field(r: Result<Option<Checked>>) -> &'static str {
        match r {
            Err(Error::Validation { field, .. }) => field,
            Err(e) => panic!("{e}"),
            Ok(_) => "ok",
        }
    }

    #[test]
    fn options_are_checked_against_the_jobs() {
        assert!(opts(None, None).check(3).unwrap().is_none());
        assert!(opts(Some("k"), None).check(1).unwrap().is_some());
        assert_eq!(field(opts(Some("k"), None).check(2)), "key");
        assert_eq!(field(opts(Some(""), None).check(1)), "key");
        assert_eq!(field(opts(None, Some(vec![Some("a")])).check(2)), "keys");
        assert_eq!(
            field(opts(None, Some(vec![Some("a"), Some("")])).check(2)),
            "keys"
        );
        assert_eq!(
            field(opts(Some("k"), Some(vec![Some("a")])).check(1)),
            "key"
        );
        assert!(opts(None, Some(vec![None, None]))
            .check(2)
            .unwrap()
            .is_none());
        let mut o = opts(None, None);
        o.unique_for = Some(Duration::from_secs(1));
        assert_eq!(field(o.check(1)), "unique_for");
        let mut o = opts(None, None);
        o.on_duplicate = Some(OnDuplicate::Error);
        assert_eq!(field(o.check(1)), "on_duplicate");
        let mut o = opts(Some("k"), None);
        o.unique_for = Some(Duration::ZERO);
        assert_eq!(field(o.check(1)), "unique_for");
    }
}
