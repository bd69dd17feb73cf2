/** The PC/SC client lives in common/ (tpmvscmgr uses it too); tests import it from here. */
export * from '../../common/pcsc_client.js';
