// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title FarolToken
/// @notice Benchmark/test ERC-20. All token logic is OpenZeppelin's `ERC20`;
///         this contract only mints the initial supply to the deployer.
contract FarolToken is ERC20 {
    constructor(string memory name_, string memory symbol_, uint256 supply) ERC20(name_, symbol_) {
        _mint(msg.sender, supply);
    }
}
