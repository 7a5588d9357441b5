//! Instances made before their calls, off the calling thread.
//!
//! A compiled module with a small initial memory keeps one fresh instance ready ([`Ready`]):
//! the compile thread makes the first right after compiling, the helper thread the next after
//! a call takes one. A call that finds one skips instantiation (a pool slot, the data
//! segments, the exports) and leaves the store to the helper thread to drop: resetting the
//! pool slot there costs the caller nothing, and the slot's memory, which another thread
//! wrote, need not be pulled into the caller's cache.
//!
//! The helper is never woken: it looks for work every [`POLL`]. Waking a sleeping thread
//! costs the waker tens of microseconds on a virtual machine, more than the work handed over.
//! A module called again within that time finds no ready instance and instantiates, and such
//! calls drop their own stores, as every call did before: the pool then hands the module's
//! next call the slot it just freed, still warm in the caller's cache, so a contract called
//! many times in a block runs as fast as without ready instances.
//!
//! A ready instance has never run: it is exactly what instantiating at the call would give,
//! and the call gives it its state and fuel before running it. So no result depends on
//! whether one was there; `ready_instances_change_nothing` in `tests/wasm.rs` checks that.
//!
//! Bounds: at most [`READY_LIMIT`] modules hold one (the least recently prepared gives its
//! up), only modules whose initial memory is at most [`READY_MAX_PAGES`] get one, and at
//! most [`QUEUE_LIMIT`] jobs wait for the helper (past that the caller does the work
//! itself). Ready and used instances waiting for the helper therefore hold at most
//! `READY_LIMIT + QUEUE_LIMIT` of the pool's slots and a few tens of MiB.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use revm::interpreter::InstructionResult;
use wasmtime::{Engine, Store, TypedFunc};

use super::host::{halt, HostState, Instance, WtData};
use super::{lock, Compiled, WasmRuntime, READY_ON};

/// Most modules with a ready instance.
pub const READY_LIMIT: usize = 64;

/// Most jobs waiting for the helper thread; past it the caller does the work.
pub const QUEUE_LIMIT: usize = 64;

/// Largest initial memory, in 64 KiB pages, of a module that gets a ready instance (the
/// cheap pages: a typical contract's).
pub const READY_MAX_PAGES: u64 = super::CHEAP_PAGES;

/// A store whose host state is idle ([`HostState::idle`]): it points at nothing outside
/// itself.
pub(crate) struct Parked(Store<WtData>);

// SAFETY: `Store<WtData>` is not `Send` only because `HostState::env` is a raw pointer. A
// parked store's host state is always an idle one, whose `env` is a box that state owns (a
// `NoEnv`, which holds no references and is `Send`) and that nothing else points to; so
// moving the store to another thread moves everything it points to along with it.
#[allow(unsafe_code)]
unsafe impl Send for Parked {}

impl Parked {
    /// Detaches `store` from its frame (its host state becomes idle) so it can move.
    pub(crate) fn detach(mut store: Store<WtData>) -> Parked {
        // The frame's state only points at the frame's environment; dropping it touches
        // nothing there.
        drop(std::mem::replace(&mut store.data_mut().host, HostState::idle()));
        Parked(store)
    }

    /// Drops the store (its instance gives its pool slot back) and frees the idle state.
    fn free(self) {
        self.0.into_data().host.free_idle();
    }
}

/// A fresh instance of a compiled module and its entry point, never run.
pub(crate) struct Ready {
    store: Parked,
    entry: TypedFunc<(), ()>,
}

impl Ready {
    /// The store, now holding `host` (the call's state), and the entry point.
    pub(crate) fn attach(self, host: HostState) -> (Store<WtData>, TypedFunc<(), ()>) {
        let mut store = self.store.0;
        std::mem::replace(&mut store.data_mut().host, host).free_idle();
        (store, self.entry)
    }
}

/// Instantiates `c` in a new store that holds `host`, records the instance's memory and fuel
/// global in the store's data and returns the store (also on failure: it holds the host
/// state) with the entry point.
pub(crate) fn instantiate(
    engine: &Engine,
    c: &Compiled,
    host: HostState,
) -> (Store<WtData>, wasmtime::Result<TypedFunc<(), ()>>) {
    let mut store = Store::new(engine, Instance::new(host));
    store.limiter(|s| &mut s.host.limits);
    let entry = (|| {
        let instance = c.pre.instantiate(&mut store)?;
        let export = |store: &mut Store<WtData>, e| instance.get_module_export(store, e);
        let memory = export(&mut store, &c.memory).and_then(wasmtime::Extern::into_memory);
        let gas = export(&mut store, &c.gas).and_then(wasmtime::Extern::into_global);
        let entry = export(&mut store, &c.call).and_then(wasmtime::Extern::into_func);
        // Validation requires all three; a module without them halts like INVALID.
        let (Some(memory), Some(gas), Some(entry)) = (memory, gas, entry) else {
            return Err(wasmtime::Error::new(halt(InstructionResult::InvalidFEOpcode)));
        };
        let entry = entry.typed::<(), ()>(&store)?;
        store.data_mut().memory = Some(memory);
        store.data_mut().gas = Some(gas);
        Ok(entry)
    })();
    (store, entry)
}

/// Work for the helper thread.
pub(crate) enum Job {
    /// Make a ready instance of this module.
    Prepare(Arc<Compiled>),
    /// Drop this store.
    Drop(Parked),
}

/// Modules with a ready instance (or about to have one), least recently prepared first.
#[derive(Default)]
pub(crate) struct Holders(VecDeque<Arc<Compiled>>);

impl WasmRuntime {
    /// Whether `c` gets ready instances.
    fn eligible(&self, c: &Compiled) -> bool {
        c.kept && self.ready_instances() && c.info.initial_pages <= READY_MAX_PAGES
    }

    /// Gives `c` a ready instance if it has none (and gets them). The least recently
    /// prepared module past [`READY_LIMIT`] drops its own.
    pub(crate) fn prepare(&self, c: &Arc<Compiled>) {
        if !self.eligible(c) || c.retired.load(Ordering::SeqCst) || lock(&c.ready).is_some() {
            return;
        }
        let (store, entry) = instantiate(&self.engine, c, HostState::idle());
        let Ok(entry) = entry else {
            // The call instantiates it again and gets the same failure.
            Parked(store).free();
            return;
        };
        *lock(&c.ready) = Some(Ready { store: Parked(store), entry });
        let evicted = {
            let mut holders = lock(&self.holders);
            holders.0.retain(|h| !Arc::ptr_eq(h, c));
            holders.0.push_back(c.clone());
            if holders.0.len() > READY_LIMIT {
                holders.0.pop_front()
            } else {
                None
            }
        };
        if let Some(old) = evicted {
            let ready = lock(&old.ready).take();
            if let Some(r) = ready {
                r.store.free();
            }
        }
        // Left memory while the instance was made: `retire` set the flag before it dropped
        // what was ready, so one of the two drops this one.
        if c.retired.load(Ordering::SeqCst) {
            self.unprepare(c);
        }
    }

    /// `c` leaves memory: it gets no ready instance from now on, and drops its own.
    pub(crate) fn retire(&self, c: &Arc<Compiled>) {
        c.retired.store(true, Ordering::SeqCst);
        self.unprepare(c);
    }

    /// Drops `c`'s ready instance, if it has one.
    pub(crate) fn unprepare(&self, c: &Arc<Compiled>) {
        lock(&self.holders).0.retain(|h| !Arc::ptr_eq(h, c));
        let ready = lock(&c.ready).take();
        if let Some(r) = ready {
            r.store.free();
        }
    }

    /// How many modules hold a ready instance now.
    pub(crate) fn prepared_count(&self) -> u64 {
        let holders = lock(&self.holders);
        holders.0.iter().filter(|c| lock(&c.ready).is_some()).count() as u64
    }

    /// Drops every ready instance.
    pub(crate) fn unprepare_all(&self) {
        let holders = std::mem::take(&mut lock(&self.holders).0);
        for c in holders {
            self.unprepare(&c);
        }
    }

    /// `c`'s ready instance, if it has one; asks the helper thread for the next.
    pub(crate) fn take_ready(&'static self, c: &Arc<Compiled>) -> Option<Ready> {
        if !self.eligible(c) {
            return None;
        }
        let ready = lock(&c.ready).take();
        if !c.preparing.swap(true, Ordering::AcqRel) && !self.send(Job::Prepare(c.clone()), |_| ())
        {
            c.preparing.store(false, Ordering::Release);
        }
        let ready = ready?;
        // Counted only while ready instances are on; a call that raced with turning them off
        // instantiates its own instead.
        let on = |w: u64| (w & READY_ON != 0).then_some(w + 1);
        if self.ready_word.fetch_update(Ordering::AcqRel, Ordering::Acquire, on).is_err() {
            ready.store.free();
            return None;
        }
        Some(ready)
    }

    /// Leaves the store of a call that ran on a ready instance for the helper thread to drop
    /// (drops it here when [`QUEUE_LIMIT`] jobs are waiting, or ready instances are off).
    pub(crate) fn discard(&'static self, store: Store<WtData>) {
        if !self.ready_instances() {
            drop(store);
            return;
        }
        self.send(Job::Drop(Parked::detach(store)), |job| {
            if let Job::Drop(p) = job {
                p.free();
            }
        });
    }

    /// Queues `job` for the helper thread (starting it on first use); `refused` gets it back
    /// when [`QUEUE_LIMIT`] jobs are waiting or the thread cannot be started. Whether it was
    /// queued. The helper is not woken (see the module's notes).
    fn send(&'static self, job: Job, refused: impl FnOnce(Job)) -> bool {
        let started = *self.helper.get_or_init(|| {
            std::thread::Builder::new()
                .name("farol-wasm-helper".into())
                .spawn(move || self.help())
                .is_ok()
        });
        let mut jobs = lock(&self.jobs);
        if !started || jobs.len() >= QUEUE_LIMIT {
            drop(jobs);
            refused(job);
            return false;
        }
        jobs.push(job);
        true
    }

    /// The helper thread's loop: every [`POLL`], the jobs queued since (every [`IDLE_POLL`]
    /// after a second without any).
    fn help(&self) {
        let mut idle_since = std::time::Instant::now();
        loop {
            let mut jobs = std::mem::take(&mut *lock(&self.jobs));
            if !jobs.is_empty() {
                idle_since = std::time::Instant::now();
            }
            // Stores first: a module's next ready instance may then get the slot its last
            // call freed.
            jobs.sort_by_key(|j| matches!(j, Job::Prepare(_)));
            for job in jobs {
                match job {
                    Job::Drop(p) => p.free(),
                    Job::Prepare(c) => {
                        self.prepare(&c);
                        c.preparing.store(false, Ordering::Release);
                    }
                }
            }
            let idle = idle_since.elapsed() > Duration::from_secs(1);
            std::thread::sleep(if idle { IDLE_POLL } else { POLL });
        }
    }
}

/// How often the helper thread looks for work while there is some.
pub(crate) const POLL: Duration = Duration::from_millis(1);

/// How often it looks after a second without work.
pub(crate) const IDLE_POLL: Duration = Duration::from_millis(20);

/// Whether the helper thread started.
pub(crate) type Helper = OnceLock<bool>;

/// Instantiates `c` once and drops the instance, so that the work wasmtime does on a module's
/// first instantiation is done on the compiling thread, for modules that get no ready
/// instance. Nothing runs: `call` is not invoked.
pub(crate) fn warm_up(engine: &Engine, c: &Compiled) {
    let (store, _) = instantiate(engine, c, HostState::idle());
    Parked(store).free();
}
