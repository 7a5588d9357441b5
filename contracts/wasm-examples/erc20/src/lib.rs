//! An ERC-20 token written in Rust for Farol's WASM VM. Callers see the standard interface:
//! `name`, `symbol`, `decimals`, `totalSupply`, `balanceOf`, `transfer`, `approve`,
//! `allowance`, `transferFrom`, the `Transfer` and `Approval` events, and OpenZeppelin 5's
//! custom errors. Storage is laid out as OpenZeppelin's `ERC20` lays it out (balances at slot
//! 0, allowances at 1, total supply at 2).
//!
//! Two additions: `initialize(uint256 supply)`, which a WASM contract needs in place of a
//! constructor (the first call mints `supply` to its caller; later calls revert), and
//! `transferAndCall(address to, uint256 amount, bytes data)`, which transfers and then calls
//! `onTokenTransfer(address from, uint256 amount, bytes data)` on `to`, reverting the whole
//! transfer if that call fails (the hook may call back into the token).

#![no_std]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

use farol_wasm_sdk::{
    caller, emit, entry, error_string, revert_with, sol, word, Address, Slot, SolCall,
    SolInterface, U256,
};

sol! {
    interface IERC20 {
        function name() external view returns (string);
        function symbol() external view returns (string);
        function decimals() external view returns (uint8);
        function totalSupply() external view returns (uint256);
        function balanceOf(address owner) external view returns (uint256);
        function allowance(address owner, address spender) external view returns (uint256);
        function transfer(address to, uint256 amount) external returns (bool);
        function approve(address spender, uint256 amount) external returns (bool);
        function transferFrom(address from, address to, uint256 amount) external returns (bool);
        function initialize(uint256 supply) external;
        function transferAndCall(address to, uint256 amount, bytes data) external returns (bool);

        event Transfer(address indexed from, address indexed to, uint256 value);
        event Approval(address indexed owner, address indexed spender, uint256 value);

        error ERC20InsufficientBalance(address sender, uint256 balance, uint256 needed);
        error ERC20InvalidSender(address sender);
        error ERC20InvalidReceiver(address receiver);
        error ERC20InsufficientAllowance(address spender, uint256 allowance, uint256 needed);
        error ERC20InvalidApprover(address approver);
        error ERC20InvalidSpender(address spender);
    }

    interface ITokenReceiver {
        function onTokenTransfer(address from, uint256 amount, bytes data) external returns (bool);
    }
}

use IERC20::IERC20Calls as Calls;

const BALANCES: Slot = Slot::new(0);
const ALLOWANCES: Slot = Slot::new(1);
const TOTAL_SUPPLY: Slot = Slot::new(2);
/// Not an OpenZeppelin slot: set once `initialize` has run.
const INITIALIZED: Slot = Slot::new(5);

fn balance_of(who: Address) -> U256 {
    BALANCES.at(word(who)).get()
}

fn allowance(owner: Address, spender: Address) -> U256 {
    ALLOWANCES.at(word(owner)).at(word(spender)).get()
}

/// OpenZeppelin's `_update`: mints from zero, burns to zero, moves otherwise.
fn update(from: Address, to: Address, amount: U256) {
    if from == Address::ZERO {
        TOTAL_SUPPLY.set(TOTAL_SUPPLY.get().saturating_add(amount));
    } else {
        let have = balance_of(from);
        if have < amount {
            revert_with(&IERC20::ERC20InsufficientBalance {
                sender: from,
                balance: have,
                needed: amount,
            });
        }
        BALANCES.at(word(from)).set(have - amount);
    }
    if to == Address::ZERO {
        TOTAL_SUPPLY.set(TOTAL_SUPPLY.get() - amount);
    } else {
        let slot = BALANCES.at(word(to));
        slot.set(slot.get() + amount);
    }
    emit(&IERC20::Transfer { from, to, value: amount });
}

fn transfer(from: Address, to: Address, amount: U256) {
    if from == Address::ZERO {
        revert_with(&IERC20::ERC20InvalidSender { sender: Address::ZERO });
    }
    if to == Address::ZERO {
        revert_with(&IERC20::ERC20InvalidReceiver { receiver: Address::ZERO });
    }
    update(from, to, amount);
}

fn approve(owner: Address, spender: Address, amount: U256, event: bool) {
    if owner == Address::ZERO {
        revert_with(&IERC20::ERC20InvalidApprover { approver: Address::ZERO });
    }
    if spender == Address::ZERO {
        revert_with(&IERC20::ERC20InvalidSpender { spender: Address::ZERO });
    }
    ALLOWANCES.at(word(owner)).at(word(spender)).set(amount);
    if event {
        emit(&IERC20::Approval { owner, spender, value: amount });
    }
}

fn spend_allowance(owner: Address, spender: Address, amount: U256) {
    let current = allowance(owner, spender);
    if current != U256::MAX {
        if current < amount {
            revert_with(&IERC20::ERC20InsufficientAllowance {
                spender,
                allowance: current,
                needed: amount,
            });
        }
        approve(owner, spender, current - amount, false);
    }
}

fn main(input: &[u8]) -> Result<Vec<u8>, Vec<u8>> {
    // Arguments are checked as Solidity checks them (an address with bits above its 20
    // bytes, a bool other than 0 or 1, is refused, not cut down). Unlike a Solidity ERC-20,
    // its functions take ether sent with them: the tests use it to send value into a WASM
    // frame.
    let Ok(call) = Calls::abi_decode_validate(input) else {
        return Err(Vec::new());
    };
    let me = caller();
    Ok(match call {
        Calls::name(_) => IERC20::nameCall::abi_encode_returns(&String::from("Farol Rust Token")),
        Calls::symbol(_) => IERC20::symbolCall::abi_encode_returns(&String::from("FRT")),
        Calls::decimals(_) => IERC20::decimalsCall::abi_encode_returns(&18u8),
        Calls::totalSupply(_) => IERC20::totalSupplyCall::abi_encode_returns(&TOTAL_SUPPLY.get()),
        Calls::balanceOf(c) => IERC20::balanceOfCall::abi_encode_returns(&balance_of(c.owner)),
        Calls::allowance(c) => {
            IERC20::allowanceCall::abi_encode_returns(&allowance(c.owner, c.spender))
        }
        Calls::transfer(c) => {
            transfer(me, c.to, c.amount);
            IERC20::transferCall::abi_encode_returns(&true)
        }
        Calls::approve(c) => {
            approve(me, c.spender, c.amount, true);
            IERC20::approveCall::abi_encode_returns(&true)
        }
        Calls::transferFrom(c) => {
            spend_allowance(c.from, me, c.amount);
            transfer(c.from, c.to, c.amount);
            IERC20::transferFromCall::abi_encode_returns(&true)
        }
        Calls::initialize(c) => {
            if INITIALIZED.get() != U256::ZERO {
                return Err(error_string("already initialized"));
            }
            INITIALIZED.set(U256::from(1));
            update(Address::ZERO, me, c.supply);
            Vec::new()
        }
        Calls::transferAndCall(c) => {
            transfer(me, c.to, c.amount);
            let hook =
                ITokenReceiver::onTokenTransferCall { from: me, amount: c.amount, data: c.data };
            match farol_wasm_sdk::call(c.to, U256::ZERO, &hook) {
                Ok(true) => IERC20::transferAndCallCall::abi_encode_returns(&true),
                Ok(false) => return Err(error_string("receiver refused the tokens")),
                // The receiver's revert data, passed on.
                Err(data) => return Err(data),
            }
        }
    })
}

entry!(main);
