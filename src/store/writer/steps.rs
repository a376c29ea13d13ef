//! A conversation step's rows, each table's part written by that table's module.

use super::*;

/// Write the steps' state and rows; returns the ids of the outbox rows by idem key.
///
/// An outbox row whose key is taken is not written again and not returned (the step ran
/// before and its sends were handed over then), except with `reclaim`: the step is written
/// again after its batch reported a failure, and a row with its key, its `created_at` and
/// still `pending` is this very step's, committed by that batch after all and never handed
/// to the sender; it is returned as if inserted now.
pub(super) fn commit_steps(
    tx: &mut dyn SyncTx,
    steps: &[&StepCommit],
    reclaim: bool,
) -> Result<HashMap<String, i64>, StoreError> {
    if steps.is_empty() {
        return Ok(HashMap::new());
    }
    /// Each step's rows of one kind, beside their step.
    fn rows_of<'a, T>(
        steps: &[&'a StepCommit],
        rows: impl Fn(&'a StepCommit) -> &'a [T],
    ) -> Vec<(&'a StepCommit, &'a T)> {
        steps
            .iter()
            .flat_map(|s| rows(s).iter().map(move |r| (*s, r)))
            .collect()
    }
    upsert_conversations(tx, steps)?;
    let contacts: Vec<(&StepCommit, &ContactUpsert)> = steps
        .iter()
        .filter_map(|s| s.contact.as_ref().map(|c| (*s, c)))
        .collect();
    upsert_contacts(tx, &contacts)?;
    let applied: Vec<(i64, i64)> = steps
        .iter()
        .filter_map(|s| s.inbox_done.map(|seq| (seq, s.prev_seq)))
        .collect();
    mark_applied(tx, &applied)?;
    let fired: Vec<i64> = steps.iter().filter_map(|s| s.timer_fired).collect();
    mark_fired(tx, &fired)?;
    let ids = insert_outbox(tx, &rows_of(steps, |s| &s.outbox), reclaim)?;
    insert_timers(tx, &rows_of(steps, |s| &s.timers))?;
    record_bot_sessions(tx, &rows_of(steps, |s| &s.bot_records))?;
    record_flow_executions(tx, &rows_of(steps, |s| &s.flow_records))?;
    // Their events are written by the caller, after every other row of the batch.
    for s in steps {
        super::super::analytics::log_handoffs(tx, &s.hook_events)?;
    }
    Ok(ids)
}
