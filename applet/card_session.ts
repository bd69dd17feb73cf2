/**
 * Volatile security state of one card between power events: nothing here is saved.
 * The PIN's verified state itself is the vault's `unlocked` flag.
 */
import type { ManagementKeyAlgorithm } from './key_vault.js';

/** A 9B authentication step the card is waiting for: single use, forgotten by any other 9B command. */
export interface PendingAdminStep {
  /** 'witness': mutual authentication step 2; 'challenge': external authentication step 2. */
  kind: 'witness' | 'challenge';
  algorithm: ManagementKeyAlgorithm;
  value: Uint8Array;
}

export class CardSession {
  /** The management key (9B) authenticated since the last power event. */
  adminAuthenticated = false;
  /** VERIFY succeeded since the last use of a PIN-always key (9C): each such use consumes it. */
  pinFreshForAlways = false;
  pendingAdminStep: PendingAdminStep | undefined;
  /**
   * What the command being run did with the verified PIN, for the verified-PIN lifetime
   * (piv_applet.ts reads and clears it after each command): 'verified' by VERIFY (the
   * lifetime starts), or a private-key operation it allowed ('key-use': spends it with ONCE).
   */
  pinActivity: 'none' | 'verified' | 'key-use' = 'none';

  forgetPendingStep(): void {
    this.pendingAdminStep?.value.fill(0);
    this.pendingAdminStep = undefined;
  }

  /** Every authentication is lost (power off, power on, reset, logout of everything). */
  clear(): void {
    this.adminAuthenticated = false;
    this.pinFreshForAlways = false;
    this.pinActivity = 'none';
    this.forgetPendingStep();
  }
}
