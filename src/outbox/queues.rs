//! The sender's queues: one message in flight per conversation, service replies before
//! business-initiated messages, parked conversations, receipts waiting for a lane.

use super::*;

pub(super) struct Queued {
    pub(super) record: OutboxRecord,
    /// Its outcome is unknown: it was in flight (state `sending`) when the process last
    /// stopped, or its last attempt got no answer.
    pub(super) ambiguous: bool,
    pub(super) class: SendClass,
    /// Attempts made by this process.
    pub(super) attempts: u32,
    /// Admitted by the gate once (counted against the day and the tier).
    pub(super) counted: bool,
    /// When it was first admitted (for a refund of the daily unit).
    pub(super) admitted_at: i64,
    /// The tier slot its admission took, released if Meta definitely refuses it.
    pub(super) tier: Option<TierWrite>,
}

/// Read receipts to send: at most one in flight per conversation, and only the newest
/// waiting one (it marks the earlier messages read too).
#[derive(Default)]
pub(super) struct Receipts {
    pub(super) newest: HashMap<UserKey, Wamid>,
    pub(super) ready: VecDeque<UserKey>,
    pub(super) busy: HashSet<UserKey>,
}

impl Receipts {
    pub(super) fn push(&mut self, user: UserKey, wamid: Wamid) {
        let fresh = self.newest.insert(user.clone(), wamid).is_none();
        if fresh && !self.busy.contains(&user) {
            self.ready.push_back(user);
        }
    }

    pub(super) fn next(&mut self) -> Option<(UserKey, Wamid)> {
        let user = self.ready.pop_front()?;
        let wamid = self.newest.remove(&user)?;
        self.busy.insert(user.clone());
        Some((user, wamid))
    }

    pub(super) fn finished(&mut self, user: UserKey) {
        self.busy.remove(&user);
        if self.newest.contains_key(&user) {
            self.ready.push_back(user);
        }
    }
}

/// Per-conversation FIFO queues, two lanes of conversations ready to send (service replies
/// before business-initiated traffic), and conversations parked until a time.
#[derive(Default)]
pub(super) struct Queues {
    pub(super) queues: HashMap<UserKey, VecDeque<Queued>>,
    /// Conversations whose head may be tried, by the head's class: [service, business].
    pub(super) ready: [VecDeque<UserKey>; 2],
    /// Conversations waiting for their own time (pair rate, 131056, a retry's backoff), and
    /// whether a gate limit (not a retry's backoff) parked them.
    pub(super) parked: BTreeMap<(i64, u64), (UserKey, bool)>,
    pub(super) park_seq: u64,
    /// Conversations with a send in flight.
    pub(super) sending: HashSet<UserKey>,
    /// Conversations ready, parked or sending.
    pub(super) scheduled: HashSet<UserKey>,
    /// Outbox ids queued or in flight (a row is never queued twice).
    pub(super) known: HashSet<i64>,
    /// Messages of paused campaigns, set aside by campaign until it is resumed (they stay in
    /// `known`: never queued twice).
    pub(super) aside: BTreeMap<i64, Vec<Queued>>,
}

pub(super) fn lane(class: SendClass) -> usize {
    match class {
        SendClass::Service => 0,
        SendClass::Business => 1,
    }
}

impl Queues {
    pub(super) fn push(&mut self, record: OutboxRecord, ambiguous: bool) -> bool {
        if !self.known.insert(record.id) {
            return false;
        }
        let user = record.user_key.clone();
        let class = record.class;
        self.queues
            .entry(user.clone())
            .or_default()
            .push_back(Queued {
                record,
                ambiguous,
                class,
                attempts: 0,
                counted: false,
                admitted_at: 0,
                tier: None,
            });
        if self.scheduled.insert(user.clone()) {
            self.ready[lane(class)].push_back(user);
        }
        true
    }

    pub(super) fn head_mut(&mut self, user: &str) -> Option<&mut Queued> {
        self.queues.get_mut(user).and_then(|q| q.front_mut())
    }

    /// Put `user` back in its lane (at the front: it was next).
    pub(super) fn ready_front(&mut self, user: UserKey) {
        if let Some(class) = self.head_mut(&user).map(|h| h.class) {
            self.ready[lane(class)].push_front(user);
        } else {
            self.scheduled.remove(&user);
        }
    }

    pub(super) fn ready_back(&mut self, user: UserKey) {
        if let Some(class) = self.head_mut(&user).map(|h| h.class) {
            self.ready[lane(class)].push_back(user);
        } else {
            self.scheduled.remove(&user);
        }
    }

    /// `by_gate`: a gate limit parked it (the gate is asked again when its limits change).
    pub(super) fn park(&mut self, user: UserKey, at: i64, by_gate: bool) {
        self.park_seq += 1;
        self.parked.insert((at, self.park_seq), (user, by_gate));
    }

    pub(super) fn unpark_due(&mut self, now: i64) {
        while let Some(entry) = self.parked.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (user, _) = entry.remove();
            self.ready_back(user);
        }
    }

    /// The gate's limits changed: what it parked is decided again (a retry's backoff stays).
    pub(super) fn unpark_gate_waits(&mut self) {
        let gate_waits: Vec<(i64, u64)> = self
            .parked
            .iter()
            .filter(|(_, (_, by_gate))| *by_gate)
            .map(|(k, _)| *k)
            .collect();
        for k in gate_waits {
            if let Some((user, _)) = self.parked.remove(&k) {
                self.ready_back(user);
            }
        }
    }

    pub(super) fn next_park(&self) -> Option<i64> {
        self.parked.keys().next().map(|k| k.0)
    }

    /// (user_key, id) of the rows never handed to a send by this process (a row that was
    /// tried stays `sending`, so the next process treats its outcome as unknown). Rows
    /// committed by this process are `pending` already; a row from before the last stop that
    /// was marked again and then not tried is set back.
    pub(super) fn unsent(&self) -> Vec<(UserKey, i64)> {
        self.queues
            .iter()
            .flat_map(|(user, q)| {
                let skip = usize::from(self.sending.contains(user));
                q.iter().skip(skip)
            })
            .chain(self.aside.values().flatten())
            .filter(|queued| queued.attempts == 0 && !queued.ambiguous)
            .map(|queued| (queued.record.user_key.clone(), queued.record.id))
            .collect()
    }

    /// Set the head of `user`'s queue (not in flight) aside for its paused campaign; the
    /// conversation's next message, if any, may go. Returns the row's (user_key, id) if it
    /// was never tried (it can be marked unsent).
    pub(super) fn set_aside_head(
        &mut self,
        user: UserKey,
        campaign: i64,
    ) -> Option<(UserKey, i64)> {
        self.sending.remove(&user);
        let q = self.queues.get_mut(&user)?;
        let head = q.pop_front()?;
        if q.is_empty() {
            self.queues.remove(&user);
            self.scheduled.remove(&user);
        } else {
            self.ready_front(user);
        }
        let unsent = (head.attempts == 0 && !head.ambiguous)
            .then(|| (head.record.user_key.clone(), head.record.id));
        self.aside.entry(campaign).or_default().push(head);
        unsent
    }

    /// Queue again, at the end of their conversations, the messages set aside for campaigns
    /// no longer withheld (in the order they were created). Returns how many.
    pub(super) fn release_aside(&mut self, withheld: impl Fn(i64) -> bool) -> usize {
        let mut rows = self.take_aside(|c| !withheld(c));
        rows.sort_by_key(|r| r.record.id);
        let n = rows.len();
        for queued in rows {
            let user = queued.record.user_key.clone();
            let class = queued.class;
            self.queues
                .entry(user.clone())
                .or_default()
                .push_back(queued);
            if self.scheduled.insert(user.clone()) {
                self.ready[lane(class)].push_back(user);
            }
        }
        n
    }

    /// Take out the messages set aside for the campaigns `which` names (they stay in `known`
    /// until settled).
    pub(super) fn take_aside(&mut self, which: impl Fn(i64) -> bool) -> Vec<Queued> {
        let gone: Vec<i64> = self.aside.keys().copied().filter(|c| which(*c)).collect();
        gone.iter()
            .filter_map(|c| self.aside.remove(c))
            .flatten()
            .collect()
    }

    /// The head of `user`'s queue is settled: the next one may go.
    pub(super) fn finished_head(&mut self, user: UserKey) {
        self.sending.remove(&user);
        if let Some(q) = self.queues.get_mut(&user) {
            if let Some(done) = q.pop_front() {
                self.known.remove(&done.record.id);
            }
            if q.is_empty() {
                self.queues.remove(&user);
                self.scheduled.remove(&user);
            } else {
                self.ready_back(user);
            }
        } else {
            self.scheduled.remove(&user);
        }
    }
}

/// How one attempt ended, for the sender's queues.
pub(super) enum Finished {
    /// Sent, or failed for good: the next message of the conversation may go.
    Settled,
    /// Try the same message again, not before `at` (and through the gate again).
    /// `maybe_sent`: the attempt may have reached Meta (timeout, 5xx), so the next one counts
    /// against the daily cap again.
    Retry {
        attempts: u32,
        at: i64,
        maybe_sent: bool,
        /// When an attempt that got no answer was made (its outcome is then unknown).
        in_doubt_since: Option<i64>,
    },
    /// Sending is paused or halted: the gate holds the message until resumed.
    Held { attempts: u32 },
    /// Its campaign was paused before the request was handed to the HTTP client: set aside
    /// until the campaign is resumed.
    Withdrawn { campaign: i64 },
    /// Shutdown came first.
    Cancelled,
}

/// What a send task needs.
pub(super) struct Job {
    pub(super) record: OutboxRecord,
    pub(super) class: SendClass,
    pub(super) attempts: u32,
    pub(super) admitted_at: i64,
    /// A tier slot to make durable before the POST (first admission only).
    pub(super) tier_write: Option<TierWrite>,
    /// The tier slot this message holds (released on a definite refusal).
    pub(super) tier_held: Option<TierWrite>,
}
