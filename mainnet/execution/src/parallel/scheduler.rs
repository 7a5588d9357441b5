//! The collaborative scheduler of Block-STM (Gelashvili et al., 2022): every worker asks it
//! for the next task, execution or validation, lowest transaction first; there is no
//! coordinator thread.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

use parking_lot::Mutex;

/// The state of one transaction's current incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    ReadyToExecute,
    Executing,
    Executed,
    Aborting,
}

/// A transaction and the incarnation of it a task is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Version {
    pub(crate) idx: usize,
    pub(crate) incarnation: u32,
}

/// Work handed to a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Task {
    Execute(Version),
    Validate(Version),
}

pub(crate) struct Scheduler {
    n: usize,
    execution_idx: AtomicUsize,
    validation_idx: AtomicUsize,
    decrease_cnt: AtomicUsize,
    num_active_tasks: AtomicUsize,
    done: AtomicBool,
    status: Vec<Mutex<(u32, Status)>>,
    dependents: Vec<Mutex<Vec<usize>>>,
}

impl Scheduler {
    pub(crate) fn new(n: usize) -> Self {
        Scheduler {
            n,
            execution_idx: AtomicUsize::new(0),
            validation_idx: AtomicUsize::new(0),
            decrease_cnt: AtomicUsize::new(0),
            num_active_tasks: AtomicUsize::new(0),
            done: AtomicBool::new(n == 0),
            status: (0..n).map(|_| Mutex::new((0, Status::ReadyToExecute))).collect(),
            dependents: (0..n).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    pub(crate) fn done(&self) -> bool {
        self.done.load(SeqCst)
    }

    fn decrease_execution_idx(&self, target: usize) {
        self.execution_idx.fetch_min(target, SeqCst);
        self.decrease_cnt.fetch_add(1, SeqCst);
    }

    fn decrease_validation_idx(&self, target: usize) {
        self.validation_idx.fetch_min(target, SeqCst);
        self.decrease_cnt.fetch_add(1, SeqCst);
    }

    fn check_done(&self) {
        let observed = self.decrease_cnt.load(SeqCst);
        if self.execution_idx.load(SeqCst).min(self.validation_idx.load(SeqCst)) >= self.n
            && self.num_active_tasks.load(SeqCst) == 0
            && observed == self.decrease_cnt.load(SeqCst)
        {
            self.done.store(true, SeqCst);
        }
    }

    /// Moves `idx` from ready to executing.
    fn try_incarnate(&self, idx: usize) -> Option<Version> {
        if idx < self.n {
            let mut s = self.status[idx].lock();
            if s.1 == Status::ReadyToExecute {
                s.1 = Status::Executing;
                return Some(Version { idx, incarnation: s.0 });
            }
        }
        None
    }

    fn next_version_to_execute(&self) -> Option<Version> {
        if self.execution_idx.load(SeqCst) >= self.n {
            self.check_done();
            return None;
        }
        self.num_active_tasks.fetch_add(1, SeqCst);
        let idx = self.execution_idx.fetch_add(1, SeqCst);
        let v = self.try_incarnate(idx);
        if v.is_none() {
            self.num_active_tasks.fetch_sub(1, SeqCst);
        }
        v
    }

    fn next_version_to_validate(&self) -> Option<Version> {
        if self.validation_idx.load(SeqCst) >= self.n {
            self.check_done();
            return None;
        }
        self.num_active_tasks.fetch_add(1, SeqCst);
        let idx = self.validation_idx.fetch_add(1, SeqCst);
        if idx < self.n {
            let s = *self.status[idx].lock();
            if s.1 == Status::Executed {
                return Some(Version { idx, incarnation: s.0 });
            }
        }
        self.num_active_tasks.fetch_sub(1, SeqCst);
        None
    }

    /// The next task, validation first when it is behind execution.
    pub(crate) fn next_task(&self) -> Option<Task> {
        if self.validation_idx.load(SeqCst) < self.execution_idx.load(SeqCst) {
            self.next_version_to_validate().map(Task::Validate)
        } else {
            self.next_version_to_execute().map(Task::Execute)
        }
    }

    /// Records that `idx` must wait for `blocking` to finish executing. Returns false when
    /// `blocking` already has, in which case the caller re-executes at once.
    pub(crate) fn add_dependency(&self, idx: usize, blocking: usize) -> bool {
        let mut deps = self.dependents[blocking].lock();
        if self.status[blocking].lock().1 == Status::Executed {
            return false;
        }
        {
            let mut s = self.status[idx].lock();
            s.1 = Status::Aborting;
        }
        deps.push(idx);
        drop(deps);
        self.num_active_tasks.fetch_sub(1, SeqCst);
        true
    }

    fn set_ready(&self, idx: usize) {
        let mut s = self.status[idx].lock();
        s.0 += 1;
        s.1 = Status::ReadyToExecute;
    }

    /// Marks `version` executed and wakes its dependents; returns a validation of it to do
    /// at once when that is all that is needed.
    pub(crate) fn finish_execution(
        &self,
        version: Version,
        wrote_new_location: bool,
    ) -> Option<Task> {
        let idx = version.idx;
        self.status[idx].lock().1 = Status::Executed;
        let deps = std::mem::take(&mut *self.dependents[idx].lock());
        if let Some(min) = deps.iter().copied().min() {
            for d in &deps {
                self.set_ready(*d);
            }
            self.decrease_execution_idx(min);
        }
        if self.validation_idx.load(SeqCst) > idx {
            if wrote_new_location {
                self.decrease_validation_idx(idx);
            } else {
                return Some(Task::Validate(version));
            }
        }
        self.num_active_tasks.fetch_sub(1, SeqCst);
        None
    }

    /// Claims the abort of `version` after a failed validation; only one validator wins.
    pub(crate) fn try_validation_abort(&self, version: Version) -> bool {
        let mut s = self.status[version.idx].lock();
        if *s == (version.incarnation, Status::Executed) {
            s.1 = Status::Aborting;
            true
        } else {
            false
        }
    }

    /// Ends a validation; after an abort, returns the re-execution to do at once.
    pub(crate) fn finish_validation(&self, idx: usize, aborted: bool) -> Option<Task> {
        if aborted {
            self.set_ready(idx);
            self.decrease_validation_idx(idx + 1);
            if self.execution_idx.load(SeqCst) > idx {
                if let Some(v) = self.try_incarnate(idx) {
                    return Some(Task::Execute(v));
                }
            }
        }
        self.num_active_tasks.fetch_sub(1, SeqCst);
        None
    }
}
