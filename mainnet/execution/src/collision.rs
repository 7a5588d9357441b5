//! EIP-7610: creating a contract at an address that already has storage is a collision, even
//! when the address has no code and a zero nonce. revm checks code and nonce only; this module
//! adds the storage rule.
//!
//! Such an address can only exist in a parent state (storage is written only by code, and an
//! address can only get code by a creation that this very rule guards), so whether an address
//! has storage is a question about the parent state, never about the block's own writes.
//! Normal execution is untouched: after a transaction, if any account it loaded had no code
//! and a zero nonce but storage in the parent state, the transaction is executed again with
//! [`CollisionInspector`], which turns a creation at such an address into revm's collision
//! outcome. Both executors do the same, so their results stay equal.

use alloy_primitives::{Address, Bytes};
use revm::context::ContextTr;
use revm::context_interface::context::ContextError;
use revm::context_interface::journaled_state::account::JournaledAccountTr;
use revm::context_interface::JournalTr;
use revm::database_interface::Database;
use revm::interpreter::interpreter_types::InterpreterTypes;
use revm::interpreter::{CreateInputs, CreateOutcome, Gas, InstructionResult, InterpreterResult};
use revm::primitives::KECCAK_EMPTY;
use revm::state::EvmState;
use revm::Inspector;

use crate::error::StateError;

/// A database that can tell whether an address has storage in the parent state.
pub(crate) trait StorageProbe: Database<Error: From<StateError>> {
    /// Whether `address` has any non-zero storage slot in the parent state.
    fn parent_has_storage(&self, address: Address) -> Result<bool, StateError>;
}

/// Whether a finished transaction must be executed again with [`CollisionInspector`]: it
/// loaded an account that had no code and a zero nonce when the transaction started, and
/// that account has storage in the parent state.
pub(crate) fn needs_collision_check(
    state: &EvmState,
    probe: &impl StorageProbe,
) -> Result<bool, StateError> {
    for (address, account) in state {
        let original = account.original_info();
        if original.nonce == 0
            && original.code_hash == KECCAK_EMPTY
            && probe.parent_has_storage(*address)?
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Turns a creation at an address with parent storage into a collision, the way revm fails a
/// creation at an address with code or a nonce: the creator's nonce is bumped, the address is
/// warmed, and the creation fails with all its gas.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CollisionInspector;

impl<CTX, INTR> Inspector<CTX, INTR> for CollisionInspector
where
    CTX: ContextTr,
    CTX::Db: StorageProbe,
    INTR: InterpreterTypes,
{
    fn create(&mut self, context: &mut CTX, inputs: &mut CreateInputs) -> Option<CreateOutcome> {
        collision(context, inputs)
    }
}

/// The outcome of creation `inputs` if it collides with an address that has storage in the
/// parent state (the creator's nonce is bumped, as revm does for its own collisions); `None`
/// leaves the creation to revm. Shared by [`CollisionInspector`] and creations from WASM.
pub(crate) fn collision<CTX>(context: &mut CTX, inputs: &CreateInputs) -> Option<CreateOutcome>
where
    CTX: ContextTr,
    CTX::Db: StorageProbe,
{
    // Leave every case revm itself fails before its collision check to revm.
    if context.journal().depth() >= 1023 {
        return None;
    }
    // A failed read ends the transaction with the error, as revm's own reads do (before
    // stop 38 it left the creation to revm, which read again: under the parallel executor a
    // read blocked by an aborted transaction could succeed the second time, and the creation
    // skipped this rule).
    let caller = context
        .journal_mut()
        .load_account_mut(inputs.caller())
        .map(|caller| (caller.nonce(), *caller.balance()));
    let (nonce, balance) = match caller {
        Ok(c) => c,
        Err(e) => return failed(context, e, inputs),
    };
    if balance < inputs.value() || nonce == u64::MAX {
        return None;
    }
    let target = inputs.created_address(nonce);
    let used = context
        .journal_mut()
        .load_account(target)
        .map(|account| account.data.info.nonce != 0 || account.data.info.code_hash != KECCAK_EMPTY);
    match used {
        Ok(true) => return None,
        Ok(false) => {}
        Err(e) => return failed(context, e, inputs),
    }
    match context.db().parent_has_storage(target) {
        Ok(true) => {}
        Ok(false) => return None,
        Err(e) => return failed(context, e.into(), inputs),
    }
    let bumped = context.journal_mut().load_account_mut(inputs.caller()).map(|mut caller| {
        caller.bump_nonce();
    });
    if let Err(e) = bumped {
        return failed(context, e, inputs);
    }
    Some(CreateOutcome {
        result: InterpreterResult {
            result: InstructionResult::CreateCollision,
            gas: Gas::new_with_regular_gas_and_reservoir(inputs.gas_limit(), inputs.reservoir()),
            output: Bytes::new(),
        },
        address: None,
        charged_create_state_gas: inputs.charged_create_state_gas(),
    })
}

/// Records the failed read `e` as the transaction's error and ends the creation as a fatal
/// error: the transaction ends with `e`.
fn failed<CTX: ContextTr>(
    context: &mut CTX,
    e: <CTX::Db as Database>::Error,
    inputs: &CreateInputs,
) -> Option<CreateOutcome> {
    *context.error() = Err(ContextError::Db(e));
    Some(CreateOutcome {
        result: InterpreterResult {
            result: InstructionResult::FatalExternalError,
            gas: Gas::new_with_regular_gas_and_reservoir(inputs.gas_limit(), inputs.reservoir()),
            output: Bytes::new(),
        },
        address: None,
        charged_create_state_gas: inputs.charged_create_state_gas(),
    })
}
