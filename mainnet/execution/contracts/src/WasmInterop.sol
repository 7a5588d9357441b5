// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// The Rust ERC-20 (contracts/wasm-examples/erc20) as Solidity sees it: an ERC-20 plus
/// transferAndCall.
interface IFarolToken {
    function balanceOf(address owner) external view returns (uint256);
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
    function approve(address spender, uint256 amount) external returns (bool);
    function transferAndCall(address to, uint256 amount, bytes calldata data) external returns (bool);
}

/// Uses the Rust token the way any Solidity contract uses an ERC-20.
contract TokenUser {
    IFarolToken public immutable token;
    uint256 public calls;
    string public lastError;

    constructor(IFarolToken t) {
        token = t;
    }

    /// Pulls `amount` from the sender (approved beforehand), sends half of it to `to`, and
    /// returns what this contract then holds.
    function pullAndSplit(address to, uint256 amount) external returns (uint256) {
        calls += 1;
        require(token.transferFrom(msg.sender, address(this), amount), "pull failed");
        require(token.transfer(to, amount / 2), "send failed");
        return token.balanceOf(address(this));
    }

    /// transferAndCall to `receiver`. A failure is caught and its reason recorded; the attempt
    /// leaves no other trace, in either VM.
    function tryPay(address receiver, uint256 amount, bytes calldata data) external returns (bool ok) {
        calls += 1;
        try token.transferAndCall(receiver, amount, data) returns (bool r) {
            ok = r;
        } catch Error(string memory reason) {
            lastError = reason;
        } catch (bytes memory) {
            lastError = "no reason";
        }
    }

    /// Sends the call's value on to `to` (a WASM contract, say) and requires success.
    function forward(address payable to) external payable {
        (bool sent,) = to.call{value: msg.value}("");
        require(sent, "forward failed");
    }

    /// Static-calls `target` with `data` and reports whether that succeeded.
    function staticProbe(address target, bytes calldata data) external view returns (bool ok) {
        (ok,) = target.staticcall(data);
    }
}

/// Receives the Rust token through its transferAndCall hook and calls back into it.
contract HookReceiver {
    IFarolToken public immutable token;
    uint256 public received;
    address public lastFrom;
    uint256 public balanceSeen;

    constructor(IFarolToken t) {
        token = t;
    }

    /// data[0] == 0x01: send half back (a second call into the token from inside the first);
    /// data[0] == 0xff: revert after writing state.
    function onTokenTransfer(address from, uint256 amount, bytes calldata data) external returns (bool) {
        require(msg.sender == address(token), "not the token");
        received += amount;
        lastFrom = from;
        balanceSeen = token.balanceOf(address(this));
        if (data.length > 0 && data[0] == 0x01) {
            require(token.transfer(from, amount / 2), "refund failed");
        }
        if (data.length > 0 && data[0] == 0xff) {
            revert("receiver says no");
        }
        return true;
    }
}

/// Calls a contract many times in one transaction: `farol bench wasm` times EVM->WASM calls
/// against EVM->EVM calls with it.
contract CallLoop {
    function run(address target, uint256 n, bytes calldata data) external returns (uint256 ok) {
        for (uint256 i = 0; i < n; i++) {
            (bool success,) = target.call(data);
            if (success) ok++;
        }
    }
}
