//! Settling the batch a combiner left in doubt. A combiner notes its batch on the board
//! before its commit (`Board::set_in_doubt`, `Board::prepare`) and marks each row it
//! changes with the batch's id (column `kv.batch`); if it dies before it has marked the
//! last of its requests done, the batch stays noted. Every fileipc writer, holding the
//! writers' lock and before it writes anything, calls [`settle`]: a changed row carrying
//! the id means the batch committed, and its pending requests are marked done with their
//! noted outcomes; otherwise they stay pending and the next combiner applies them. The
//! argument is in `board` and `docs/FORMAT.md`; [`BatchIds`] makes the ids.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use super::board::{self, Applied, Board};
use super::sql::Ops;
use crate::error::Result;

/// The outcome of a combined request: the new value, or a refusal status.
pub(super) type Outcome = std::result::Result<i64, u32>;

/// An outcome as the caller of `increment` sees it.
pub(super) fn outcome(a: Applied) -> Outcome {
    if a.status == board::STATUS_OK {
        Ok(a.result)
    } else {
        Err(a.status)
    }
}

/// Holding the writers' lock, before writing anything: settles the batch in doubt on
/// `board`, if any. Returns the noted outcome of the caller's own request (slot `own`,
/// withdrawn from the board by the caller's own combining) if the batch committed it.
///
/// Whether the batch committed: each request it applied with success changed its key's
/// row and marked it with the batch's id, in the batch's one transaction; and no fileipc
/// writer changed a row since (each settles first). So any such row of a noted request
/// tells: carrying the id, committed; not, not committed. A batch that applied nothing
/// with success changed nothing: its refused requests are evaluated again.
pub(super) fn settle(ops: &Ops<'_>, board: &Board, own: Option<usize>) -> Result<Option<Outcome>> {
    let batch = board.in_doubt();
    if batch == 0 {
        return Ok(None);
    }
    let noted = board.prepared(batch, own);
    let mut committed = false;
    for p in &noted {
        if p.outcome.status != board::STATUS_OK {
            continue;
        }
        if let Some(key) = &p.key {
            committed = ops.row_batch(key)? == Some(batch as i64);
            break;
        }
    }
    let mut mine = None;
    for p in noted {
        if !p.pending {
            if committed {
                mine = Some(outcome(p.outcome));
            }
        } else if committed {
            if board.finish(p.slot, p.outcome) {
                board.wake(p.slot);
            }
        } else {
            board.unprepare(p.slot, batch);
        }
    }
    board.clear_in_doubt(batch);
    Ok(mine)
}

/// The batch ids of one handle: 64-bit numbers from a randomly keyed hash of a counter
/// (never 0), so that no row's mark, left by any earlier batch of any board, names a
/// batch in doubt except by a 2^-64 chance. No system call per id.
pub(super) struct BatchIds {
    keys: RandomState,
    n: Cell<u64>,
}

impl BatchIds {
    pub(super) fn new() -> BatchIds {
        BatchIds {
            keys: RandomState::new(),
            n: Cell::new(0),
        }
    }

    /// A new batch id.
    pub(super) fn next(&self) -> u64 {
        loop {
            let n = self.n.get().wrapping_add(1);
            self.n.set(n);
            let id = self.keys.hash_one(n);
            if id != 0 {
                return id;
            }
        }
    }
}
