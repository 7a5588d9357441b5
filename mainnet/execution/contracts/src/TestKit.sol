// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

// Fixtures for the differential tests of farol-execution: the parallel executor
// must produce exactly the state, receipts and logs of a sequential run. Each
// function below touches state in a way that speculative execution easily gets
// wrong: reverts, out-of-gas, balances changed by other transactions or by the
// fee payment to the coinbase, one hot storage slot, nested calls, precompiles,
// value transfers and the CREATE2 / SELFDESTRUCT life cycle of EIP-6780 (Cancun).
//
// Everything here is test-only code. There is deliberately no access control.

/// @notice Contract that `TestKit` deploys with CREATE2. Its init code takes no
///         arguments, so one (factory, salt) pair always maps to one address.
contract Child {
    /// Written by the constructor; zero again only after the account was really deleted.
    address public creator; // slot 0
    uint256 public bornAt; // slot 1: block.number at creation

    event Born(address indexed creator, uint256 value);
    event Destroyed(address indexed beneficiary, uint256 amount);

    constructor() payable {
        creator = msg.sender;
        bornAt = block.number;
        emit Born(msg.sender, msg.value);
    }

    /// Sends the whole balance to `beneficiary`. Under Cancun (EIP-6780) the
    /// account (code, storage, nonce) is deleted only when it was created in the
    /// same transaction; otherwise only the balance moves.
    function destroy(address payable beneficiary) external {
        emit Destroyed(beneficiary, address(this).balance);
        selfdestruct(beneficiary);
    }

    receive() external payable {}
}

/// @notice One contract holding all the scenarios, so that a test deploys it once
///         (or a few times, for nested calls between distinct instances).
contract TestKit {
    // ---- storage (slot numbers are stable; tests may read them directly) ----
    uint256 public counter; // slot 0: the hot slot of bump()
    uint256 public lastEven; // slot 1: last even argument accepted by fail()
    uint256 public coinbaseBalance; // slot 2: snapCoinbase()
    uint256 public richCount; // slot 3: gate() outcomes with balance >= threshold
    uint256 public poorCount; // slot 4: gate() outcomes with balance < threshold
    uint256 public relays; // slot 5: relay() hops that went through this instance
    uint256 public caught; // slot 6: reverts caught by tryFail()
    bytes32 public lastDigest; // slot 7: keccak256(sha256 ++ ripemd160 ++ identity output) of hashes()
    address public lastSigner; // slot 8: ecrecover result of recover()
    uint256 public lastModexp; // slot 9: result of modexp()
    mapping(address => uint256) public seenBalance; // slot 10: snapBalance()
    mapping(uint256 => uint256) public sink; // slot 11: filled by exhaust()

    event Stored(uint256 value);
    event Bumped(address indexed by, uint256 counter);
    event CoinbaseBalance(address indexed coinbase, uint256 balance);
    event BalanceSeen(address indexed who, uint256 balance);
    event Gated(address indexed who, bool rich, uint256 balance);
    event Relayed(address indexed from, uint256 remaining);
    event Caught(address indexed target, string reason);
    event Hashed(bytes32 sha256Hash, bytes20 ripemd160Hash, bytes identity);
    event Recovered(address signer);
    event ModExp(uint256 result);
    event Paid(address indexed from, address indexed to, uint256 amount);
    event ChildDeployed(bytes32 indexed salt, address child, uint256 value);
    event ChildDestroyed(bytes32 indexed salt, address child, address beneficiary);

    /// Lets the contract be funded with plain transfers.
    receive() external payable {}

    // ---- reverts and out-of-gas ----

    /// Reverts with the reason "TestKit: odd" when `x` is odd; otherwise stores it.
    function fail(uint256 x) external {
        require(x % 2 == 0, "TestKit: odd");
        lastEven = x;
        emit Stored(x);
    }

    /// Writes fresh storage slots until the transaction runs out of gas.
    function exhaust() external {
        for (uint256 i = 0; ; ++i) {
            sink[i] = i + 1;
        }
    }

    /// Calls `target.fail(x)` and catches the revert: the inner call's writes and
    /// logs are rolled back while this frame's own writes and logs survive.
    function tryFail(address target, uint256 x) external {
        try TestKit(payable(target)).fail(x) {
            emit Stored(x);
        } catch Error(string memory reason) {
            caught += 1;
            emit Caught(target, reason);
        }
    }

    // ---- balance reads ----

    /// Stores the coinbase balance, which every transaction's fee payment changes.
    function snapCoinbase() external returns (uint256 balance) {
        balance = block.coinbase.balance;
        coinbaseBalance = balance;
        emit CoinbaseBalance(block.coinbase, balance);
    }

    /// Stores the balance of an arbitrary account.
    function snapBalance(address who) external returns (uint256 balance) {
        balance = who.balance;
        seenBalance[who] = balance;
        emit BalanceSeen(who, balance);
    }

    /// Balance-dependent control flow: writes a different slot depending on
    /// whether `who` holds at least `threshold` wei.
    function gate(address who, uint256 threshold) external returns (bool rich) {
        uint256 balance = who.balance;
        rich = balance >= threshold;
        if (rich) {
            richCount += 1;
        } else {
            poorCount += 1;
        }
        emit Gated(who, rich, balance);
    }

    // ---- hot slot ----

    /// Increments slot 0; every caller conflicts with every other.
    function bump() external returns (uint256 value) {
        value = counter + 1;
        counter = value;
        emit Bumped(msg.sender, value);
    }

    // ---- nested calls ----

    /// Counts a hop here, then calls `path[0].relay(path[1:])`. With instances
    /// A, B, C: A.relay([B, C]) runs A -> B -> C. An instance may appear repeatedly.
    function relay(address[] calldata path) external {
        relays += 1;
        emit Relayed(msg.sender, path.length);
        if (path.length > 0) {
            TestKit(payable(path[0])).relay(path[1:]);
        }
    }

    // ---- precompiles ----

    /// sha256 (0x02), ripemd160 (0x03) and identity (0x04, by staticcall) of `data`.
    function hashes(bytes calldata data) external returns (bytes32 s, bytes20 r, bytes memory echo) {
        s = sha256(data);
        r = ripemd160(data);
        bool ok;
        (ok, echo) = address(0x04).staticcall(data);
        require(ok, "TestKit: identity failed");
        lastDigest = keccak256(abi.encodePacked(s, r, echo));
        emit Hashed(s, r, echo);
    }

    /// ecrecover (0x01). An invalid signature yields address(0), which is stored too.
    function recover(bytes32 hash, uint8 v, bytes32 r, bytes32 s) external returns (address signer) {
        signer = ecrecover(hash, v, r, s);
        lastSigner = signer;
        emit Recovered(signer);
    }

    /// base ** exponent % modulus through the modexp precompile (0x05), 32-byte operands.
    function modexp(uint256 base, uint256 exponent, uint256 modulus) external returns (uint256 result) {
        (bool ok, bytes memory out) =
            address(0x05).staticcall(abi.encodePacked(uint256(32), uint256(32), uint256(32), base, exponent, modulus));
        require(ok && out.length == 32, "TestKit: modexp failed");
        result = abi.decode(out, (uint256));
        lastModexp = result;
        emit ModExp(result);
    }

    // ---- value transfer ----

    /// Forwards the attached value to `to` (with all remaining gas).
    function pay(address payable to) external payable {
        (bool ok,) = to.call{value: msg.value}("");
        require(ok, "TestKit: pay failed");
        emit Paid(msg.sender, to, msg.value);
    }

    // ---- CREATE2 / SELFDESTRUCT (EIP-6780) ----

    /// Address of the child for `salt` (exists or not).
    function childAddress(bytes32 salt) public view returns (address) {
        bytes32 h = keccak256(abi.encodePacked(bytes1(0xff), address(this), salt, keccak256(type(Child).creationCode)));
        return address(uint160(uint256(h)));
    }

    /// CREATE2-deploys a child, passing on the attached value. Reverts when the
    /// address is already taken.
    function deploy(bytes32 salt) public payable returns (address child) {
        child = address(new Child{salt: salt, value: msg.value}());
        emit ChildDeployed(salt, child, msg.value);
    }

    /// Calls `destroy` on an existing child. For a child deployed by an earlier
    /// transaction this only sends its balance to `beneficiary` (Cancun).
    function destroy(bytes32 salt, address payable beneficiary) public {
        address child = childAddress(salt);
        Child(payable(child)).destroy(beneficiary);
        emit ChildDestroyed(salt, child, beneficiary);
    }

    /// Creates the child and destroys it in the same transaction, so the account
    /// is really deleted at the end of the transaction and a later `deploy(salt)`
    /// re-creates it at the same address.
    function deployAndDestroy(bytes32 salt, address payable beneficiary) external payable returns (address child) {
        child = deploy(salt);
        destroy(salt, beneficiary);
    }
}
