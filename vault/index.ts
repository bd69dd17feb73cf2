/**
 * vault/ — the TPM key vault (implements applet/key_vault.ts). See docs/ARCHITECTURE.md, "Key vault".
 *
 *   const vault = await TpmVault.create(tpm, { pin, puk, managementKey, pinTries: 5, pukTries: 5 });
 *   await store.save({ ...card, vault: vault.state() });
 *   const again = await TpmVault.open(tpm, card.vault);
 */
export { TpmVault, type RetryStatuses, type TpmVaultInit, type TpmVaultOptions } from './tpm_vault.js';
export { VaultError, type VaultErrorReason } from './vault_error.js';
export { type TpmVaultState, parseVaultState } from './vault_state.js';
export { DEFAULT_CACHE_CAPACITY } from './loaded_objects.js';
