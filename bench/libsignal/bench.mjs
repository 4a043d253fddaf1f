// libsignal's own Node binding (@signalapp/libsignal-client) on the workloads of
// bench/crypto_bench.py: 256-byte messages, one-direction pairs, ping-pong, session setup
// with a Kyber prekey (PQXDH) and no one-time EC prekey, as XChat's "setup" row.
//
// Usage: node bench.mjs WORKLOAD N   (WORKLOAD: one-direction | ping-pong | setup)
// Prints one JSON line: {"workload", "n", "wall_per_s", "cpu_per_s", "version"}.
//
// What this measures: libsignal through Node. Every call crosses the N-API bridge and the
// store callbacks below are JavaScript (in memory, as cheap as they can be), so both are part
// of its cost here, as they are in Signal Desktop. libsignal 0.103 runs the SPQR triple ratchet
// on every message and uses round-3 Kyber1024 for PQXDH.
import * as SignalClient from '@signalapp/libsignal-client';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const VERSION = require('@signalapp/libsignal-client/package.json').version;
const MESSAGE = new Uint8Array(256).map((_, i) => i);

class Stores {
  constructor() {
    this.identity = SignalClient.IdentityKeyPair.generate();
    this.registrationId = 1 + Math.floor(Math.random() * 16000);
    this.sessions = new Map();
    this.identities = new Map();
    this.preKeys = new Map();
    this.signed = new Map();
    this.kyber = new Map();
    const self = this;
    this.sessionStore = new (class extends SignalClient.SessionStore {
      async saveSession(a, r) { self.sessions.set(a.toString(), r); }
      async getSession(a) { return self.sessions.get(a.toString()) ?? null; }
      async getExistingSessions(as) { return as.map((a) => self.sessions.get(a.toString())); }
    })();
    this.identityStore = new (class extends SignalClient.IdentityKeyStore {
      async getIdentityKey() { return self.identity.privateKey; }
      async getLocalRegistrationId() { return self.registrationId; }
      async saveIdentity(a, k) { self.identities.set(a.toString(), k); return SignalClient.IdentityChange.NewOrUnchanged; }
      async isTrustedIdentity() { return true; }
      async getIdentity(a) { return self.identities.get(a.toString()) ?? null; }
    })();
    this.preKeyStore = new (class extends SignalClient.PreKeyStore {
      async savePreKey(id, r) { self.preKeys.set(id, r); }
      async getPreKey(id) { return self.preKeys.get(id); }
      async removePreKey(id) { self.preKeys.delete(id); }
    })();
    this.signedStore = new (class extends SignalClient.SignedPreKeyStore {
      async saveSignedPreKey(id, r) { self.signed.set(id, r); }
      async getSignedPreKey(id) { return self.signed.get(id); }
    })();
    this.kyberStore = new (class extends SignalClient.KyberPreKeyStore {
      async saveKyberPreKey(id, r) { self.kyber.set(id, r); }
      async getKyberPreKey(id) { return self.kyber.get(id); }
      async markKyberPreKeyUsed() {} // last-resort key, as XChat's benchmark uses
    })();
  }

  bundle() {
    const spk = SignalClient.PrivateKey.generate();
    const spkSig = this.identity.privateKey.sign(spk.getPublicKey().serialize());
    this.signed.set(1, SignalClient.SignedPreKeyRecord.new(1, Date.now(), spk.getPublicKey(), spk, spkSig));
    const kem = SignalClient.KEMKeyPair.generate();
    const kemSig = this.identity.privateKey.sign(kem.getPublicKey().serialize());
    this.kyber.set(1, SignalClient.KyberPreKeyRecord.new(1, Date.now(), kem, kemSig));
    return SignalClient.PreKeyBundle.new(
      this.registrationId, 1, null, null, 1, spk.getPublicKey(), spkSig,
      this.identity.publicKey, 1, kem.getPublicKey(), kemSig,
    );
  }
}

const ALICE = SignalClient.ProtocolAddress.new('alice', 1);
const BOB = SignalClient.ProtocolAddress.new('bob', 1);

async function send(from, fromAddr, to, toAddr, plaintext) {
  const ct = await SignalClient.signalEncrypt(plaintext, toAddr, fromAddr, from.sessionStore, from.identityStore);
  if (ct.type() === SignalClient.CiphertextMessageType.PreKey) {
    const m = SignalClient.PreKeySignalMessage.deserialize(ct.serialize());
    return SignalClient.signalDecryptPreKey(m, fromAddr, toAddr, to.sessionStore, to.identityStore,
      to.preKeyStore, to.signedStore, to.kyberStore);
  }
  const m = SignalClient.SignalMessage.deserialize(ct.serialize());
  return SignalClient.signalDecrypt(m, fromAddr, toAddr, to.sessionStore, to.identityStore);
}

async function pair() {
  const alice = new Stores();
  const bob = new Stores();
  const bundle = bob.bundle();
  await SignalClient.processPreKeyBundle(bundle, BOB, ALICE, alice.sessionStore, alice.identityStore);
  await send(alice, ALICE, bob, BOB, MESSAGE);
  await send(bob, BOB, alice, ALICE, MESSAGE); // settle: both sides on normal messages
  return { alice, bob, bundle };
}

function clock() {
  const wall = process.hrtime.bigint();
  const cpu = process.cpuUsage();
  return (n) => {
    const w = Number(process.hrtime.bigint() - wall) / 1e9;
    const c = process.cpuUsage(cpu);
    const cs = (c.user + c.system) / 1e6;
    return { wall_per_s: n / w, cpu_per_s: n / Math.max(cs, 1e-9) };
  };
}

const WORKLOADS = {
  async 'one-direction'(n) {
    const { alice, bob } = await pair();
    const stop = clock();
    for (let i = 0; i < n; i++) await send(alice, ALICE, bob, BOB, MESSAGE);
    return stop(n);
  },
  async 'ping-pong'(n) {
    const { alice, bob } = await pair();
    const half = Math.floor(n / 2);
    const stop = clock();
    for (let i = 0; i < half; i++) {
      await send(alice, ALICE, bob, BOB, MESSAGE);
      await send(bob, BOB, alice, ALICE, MESSAGE);
    }
    return stop(half * 2);
  },
  async setup(n) {
    // As XChat's setup row: initiate from a fetched bundle, encrypt the first message, the
    // responder decrypts it (PQXDH with a Kyber prekey, no one-time EC prekey).
    const alice = new Stores();
    const bob = new Stores();
    const bundle = bob.bundle();
    const stop = clock();
    for (let i = 0; i < n; i++) {
      await SignalClient.processPreKeyBundle(bundle, BOB, ALICE, alice.sessionStore, alice.identityStore);
      await send(alice, ALICE, bob, BOB, MESSAGE);
    }
    return stop(n);
  },
};

const [workload, nText] = process.argv.slice(2);
const fn = WORKLOADS[workload];
if (!fn) {
  process.stderr.write(`unknown workload ${workload}\n`);
  process.exit(2);
}
const n = Number(nText);
await fn(Math.max(Math.floor(n / 10), 10)); // warm-up
const result = await fn(n);
process.stdout.write(JSON.stringify({ workload, n, version: VERSION, ...result }) + '\n');
