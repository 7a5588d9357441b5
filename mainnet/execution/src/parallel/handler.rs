//! revm's mainnet handler with one change: the beneficiary's fee is computed and kept aside
//! instead of credited, so that transactions do not all write (and read) one account.

use std::cell::Cell;
use std::marker::PhantomData;

use alloy_primitives::U256;
use revm::context::result::HaltReason;
use revm::context::{Block, Cfg, ContextTr, Transaction};
use revm::context_interface::JournalTr;
use revm::handler::{evm::FrameTr, EvmTr, EvmTrError, FrameResult, Handler};
use revm::interpreter::interpreter_action::FrameInit;
use revm::primitives::hardfork::SpecId;
use revm::state::EvmState;

/// The mainnet handler, except that `reward_beneficiary` only records the fee.
pub(crate) struct LazyRewardHandler<EVM, ERROR, FRAME> {
    pub(crate) fee: Cell<U256>,
    _phantom: PhantomData<(EVM, ERROR, FRAME)>,
}

impl<EVM, ERROR, FRAME> LazyRewardHandler<EVM, ERROR, FRAME> {
    pub(crate) fn new() -> Self {
        LazyRewardHandler { fee: Cell::new(U256::ZERO), _phantom: PhantomData }
    }
}

impl<EVM, ERROR, FRAME> Handler for LazyRewardHandler<EVM, ERROR, FRAME>
where
    EVM: EvmTr<Context: ContextTr<Journal: JournalTr<State = EvmState>>, Frame = FRAME>,
    ERROR: EvmTrError<EVM>,
    FRAME: FrameTr<FrameResult = FrameResult, FrameInit = FrameInit>,
{
    type Evm = EVM;
    type Error = ERROR;
    type HaltReason = HaltReason;

    /// The same amount revm's `post_execution::reward_beneficiary` credits.
    fn reward_beneficiary(
        &self,
        evm: &mut Self::Evm,
        exec_result: &mut FrameResult,
    ) -> Result<(), Self::Error> {
        let ctx = evm.ctx();
        if ctx.cfg().is_fee_charge_disabled() {
            self.fee.set(U256::ZERO);
            return Ok(());
        }
        // A transaction that self-destructed the beneficiary (so it loaded it, and already
        // waited for every earlier fee) pays it the way revm does, inside its own state:
        // revm's end of transaction then looks at the balance (under Amsterdam, EIP-8246
        // keeps a self-destructed account that still holds a balance). Kept aside, the fee
        // would be added after that, and the account deleted instead (found by a review,
        // stop 27).
        let beneficiary = ctx.block().beneficiary();
        let destroyed =
            ctx.journal_ref().evm_state().get(&beneficiary).is_some_and(|a| a.is_selfdestructed());
        if destroyed {
            self.fee.set(U256::ZERO);
            return revm::handler::post_execution::reward_beneficiary(ctx, exec_result.gas())
                .map_err(From::from);
        }
        let basefee = ctx.block().basefee() as u128;
        let effective_gas_price = ctx.tx().effective_gas_price(basefee);
        let spec: SpecId = ctx.cfg().spec().into();
        let price = if spec.is_enabled_in(SpecId::LONDON) {
            effective_gas_price.saturating_sub(basefee)
        } else {
            effective_gas_price
        };
        let gas = exec_result.gas();
        let used = gas.used().saturating_sub(gas.reservoir());
        self.fee.set(U256::from(price.wrapping_mul(used as u128)));
        Ok(())
    }
}

impl<EVM, ERROR> revm::inspector::InspectorHandler
    for LazyRewardHandler<
        EVM,
        ERROR,
        revm::handler::EthFrame<revm::interpreter::interpreter::EthInterpreter>,
    >
where
    EVM: revm::inspector::InspectorEvmTr<
        Context: ContextTr<Journal: JournalTr<State = EvmState>>,
        Frame = revm::handler::EthFrame<revm::interpreter::interpreter::EthInterpreter>,
        Inspector: revm::Inspector<
            <<Self as Handler>::Evm as EvmTr>::Context,
            revm::interpreter::interpreter::EthInterpreter,
        >,
    >,
    ERROR: EvmTrError<EVM>,
{
    type IT = revm::interpreter::interpreter::EthInterpreter;
}
