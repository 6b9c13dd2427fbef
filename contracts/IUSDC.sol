// SPDX-License-Identifier: Apache-2.0
// The parts of Circle's FiatToken (USDC) that Bursar calls, bound in Rust with alloy's `sol!`.
pragma solidity ^0.8.0;

/// What settlement, balances and reconciliation use.
interface IUSDC {
    event Transfer(address indexed from, address indexed to, uint256 value);
    /// EIP-3009: an authorization was executed (or cancelled); x402 payments confirm on it.
    event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);

    /// The EIP-712 domain's name and version, which x402 authorizations are signed under.
    function name() external view returns (string memory);
    function version() external view returns (string memory);
    function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);

    function transfer(address to, uint256 value) external returns (bool);
    function balanceOf(address account) external view returns (uint256);
    function decimals() external view returns (uint8);
    function paused() external view returns (bool);
    function isBlacklisted(address account) external view returns (bool);
    function transferWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external;
}

/// The token's administration, used only to stand up the local devnet and by tests that pause
/// the token or blacklist an address with the token's real roles.
interface IFiatTokenAdmin {
    function initialize(
        string memory tokenName,
        string memory tokenSymbol,
        string memory tokenCurrency,
        uint8 tokenDecimals,
        address newMasterMinter,
        address newPauser,
        address newBlacklister,
        address newOwner
    ) external;
    function initializeV2(string calldata newName) external;
    function initializeV2_1(address lostAndFound) external;
    function initializeV2_2(address[] calldata accountsToBlacklist, string calldata newSymbol) external;
    function configureMinter(address minter, uint256 minterAllowedAmount) external returns (bool);
    function mint(address to, uint256 amount) external returns (bool);
    function pause() external;
    function unpause() external;
    function blacklist(address account) external;
    function unBlacklist(address account) external;
}

/// Circle's upgradeability proxy.
interface IFiatTokenProxy {
    function admin() external view returns (address);
    function implementation() external view returns (address);
}
