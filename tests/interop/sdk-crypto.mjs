// Interop of the two crypto stacks: myelin-sdk clients (Rust, the ignored
// tests in tests/tests/it/sdk_interop.rs) and matrix-js-sdk with its Rust
// crypto (matrix-sdk-crypto-wasm) exchange encrypted messages in both
// directions, verify each other by SAS (emoji; to-device and in a room)
// and by QR code, and each recovers on a new device, with the recovery
// key, the identity and history the other kept in secret storage and key
// backup, through the homeserver given on the command line.
//
//   node sdk-crypto.mjs HOMESERVER_URL     (normally through run.sh)
//
// This script registers the js-sdk user, starts its sync loop, and serves a
// small loopback HTTP API the Rust tests drive it with (POST JSON, answers
// JSON): /join {room_id}, /send {room_id, body}, /expect {room_id, body}
// (waits until that body decrypts; answers the sender and wire type),
// /encryption_info {room_id, body} (the shield the js client shows on it),
// /bootstrap_cross_signing, /device_status {user_id, device_id} (how the
// js client judges that device and its user: signed by its owner,
// verified; with {until: FIELD}, once FIELD is true), and the verification
// steps /request_verification {user_id, device_id},
// /request_verification_dm {user_id, room_id} (in the room),
// /accept_verification {user_id}, /start_sas, /sas, /confirm_sas,
// /generate_qr, /scan_qr {data}, /confirm_qr_scanned and
// /verification_outcome (each {transaction_id}); and for recovery, with a
// js client of its own, /recovery_setup {bodies} (a new js user sets up
// secret storage and key backup and sends them), /recovery_login
// {user_id, password, recovery_key} (a new js device of that user takes
// its cross-signing keys from secret storage), /recovery_restore
// {recovery_key, room_id, bodies} (restores the backup from secret
// storage) and /recovery_finish (logs it out). It then runs the Rust
// tests (`sdk_interop::`, one at a time) with MYELIN_SDK_HOMESERVER,
// MYELIN_INTEROP_PEER (the API's URL) and MYELIN_INTEROP_PEER_USER, and
// exits with their status.
// MYELIN_INTEROP_REPO names the checkout to run cargo in (default: the
// current directory); MYELIN_INTEROP_TESTS narrows the tests run (a cargo
// test filter, default `sdk_interop::`).

import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { EventEmitter } from "node:events";
import { MatrixEventEvent, Method, RoomEvent, ClientEvent } from "matrix-js-sdk";
import {
    CryptoEvent, decodeRecoveryKey, EventShieldColour, EventShieldReason, VerificationPhase, VerificationRequestEvent, VerifierEvent,
} from "matrix-js-sdk/lib/crypto-api/index.js";
import { RustBackupManager } from "matrix-js-sdk/lib/rust-crypto/backup.js";
import {
    anon, baseUrl, check, collectSyncPhaseFailures, finish, isReady, limitRunTime, registerUser, startSyncLoop, stopSyncLoop, when,
} from "./harness.mjs";

limitRunTime(300_000);

let reg;
await check("POST /register creates the matrix-js-sdk user", async () => {
    reg = await registerUser("sdk_peer");
    return reg.user_id;
});
collectSyncPhaseFailures();
const loop = await startSyncLoop("js", reg, { initialSyncLimit: 20 }, { rustCrypto: true });
const js = loop.client;
await check("the matrix-js-sdk client syncs with its Rust crypto", async () => {
    await when("the sync loop is PREPARED", [], () => isReady(loop));
    return reg.device_id;
});

// Verification flows by transaction id: the request, and once a method is
// chosen the verifier's outcome and the SAS it shows. The js user plays
// one who accepts whatever start arrives (as Element's "Verify" button
// does): a verifier that appears is run with verify() at once.
const flows = new Map();
const flowNews = new EventEmitter();
const incoming = [];
js.on(CryptoEvent.VerificationRequestReceived, (request) => {
    incoming.push(request);
    flowNews.emit("news");
});
function follow(request) {
    const flow = { request, verifier: null, outcome: null, settled: false, sas: null, reciprocate: null };
    const watchVerifier = () => {
        const verifier = request.verifier;
        if (!verifier || flow.verifier) return;
        flow.verifier = verifier;
        verifier.on(VerifierEvent.ShowSas, (sas) => {
            flow.sas = sas;
            flowNews.emit("news");
        });
        verifier.on(VerifierEvent.ShowReciprocateQr, (reciprocate) => {
            flow.reciprocate = reciprocate;
            flowNews.emit("news");
        });
        flow.outcome = verifier.verify().then(() => "done", (err) => `failed: ${err?.message ?? err}`);
        void flow.outcome.then(() => {
            flow.settled = true;
            flowNews.emit("news");
        });
    };
    request.on(VerificationRequestEvent.Change, () => {
        watchVerifier();
        flowNews.emit("news");
    });
    watchVerifier();
    flows.set(request.transactionId, flow);
    return flow;
}
const news = [[flowNews, "news"]];

// Recovery scenarios (secret storage and key backup) use a js client of
// their own: a new js user's, or a new device of the Rust user's. Its
// secret storage keys are those it created and the recovery key the user
// typed last (`ring`).
let recovering = null;
let ring = null;
function recoveringClient() {
    if (!recovering) throw new Error("no recovery client: run /recovery_setup or /recovery_login first");
    return recovering.client;
}
const secretStorageCallbacks = {
    getSecretStorageKey: async ({ keys }) => {
        const ids = Object.keys(keys);
        const created = ids.find((id) => ring.created.has(id));
        if (created) return [created, ring.created.get(created)];
        return ring.typed && ids.length > 0 ? [ids[0], decodeRecoveryKey(ring.typed)] : null;
    },
    cacheSecretStorageKey: (keyId, _info, key) => ring.created.set(keyId, key),
};
async function startRecoveringClient(registration) {
    ring = { created: new Map(), typed: null };
    recovering = await startSyncLoop("js-recovery", registration, { initialSyncLimit: 20 },
        { rustCrypto: true, cryptoCallbacks: secretStorageCallbacks });
    await when("the recovery client's sync loop is PREPARED", [], () => isReady(recovering));
    return recovering.client;
}
// The js-sdk backs up new room keys after a random delay of up to 10 s; its
// knob for tests takes that away, to keep the run short.
RustBackupManager.maxBackupLoopStartDelayMillis = 0;
// Waits until CLIENT's timeline of ROOM_ID shows each of BODIES decrypted.
async function untilAllDecrypted(client, room_id, bodies) {
    const decrypted = () => (client.getRoom(room_id)?.getLiveTimeline().getEvents() ?? [])
        .filter((e) => !e.isBeingDecrypted() && !e.isDecryptionFailure())
        .map((e) => e.getContent().body);
    await when(`the recovery client decrypts ${JSON.stringify(bodies)}`, [[client, RoomEvent.Timeline], [client, MatrixEventEvent.Decrypted]],
        () => bodies.every((body) => decrypted().includes(body)));
}

// Waits until OK holds of COMPUTE()'s (asynchronous) answer, asking again
// whenever the js client (or CLIENT) emits one of EVENTS or completes a
// sync; answers the last value.
async function untilComputed(what, events, compute, ok, client = js) {
    let latest = null;
    let running = false;
    const look = () => {
        if (running) return;
        running = true;
        compute().then(
            (value) => { latest = value; running = false; flowNews.emit("news"); },
            () => { running = false; },
        );
    };
    const sources = [...events, ClientEvent.Sync];
    for (const name of sources) client.on(name, look);
    try {
        look();
        return await when(what, news, () => latest !== null && ok(latest) && latest);
    } catch (err) {
        throw new Error(`${err?.message ?? err}; last seen: ${JSON.stringify(latest)}`);
    } finally {
        for (const name of sources) client.off(name, look);
    }
}
function flowOf(transaction_id) {
    const flow = flows.get(transaction_id);
    if (!flow) throw new Error(`no verification ${transaction_id}`);
    return flow;
}
const flowView = (flow) => ({
    transaction_id: flow.request.transactionId,
    room_id: flow.request.roomId ?? null,
    phase: VerificationPhase[flow.request.phase],
    cancellation_code: flow.request.cancellationCode,
});

const commands = {
    async join({ room_id }) {
        await when("the js client sees the invite", [[js, ClientEvent.Room]], () => js.getRoom(room_id)?.getMyMembership() === "invite");
        await js.joinRoom(room_id);
        await when("the js client has the joined room with its encryption state", [[js, RoomEvent.MyMembership]], () => {
            const room = js.getRoom(room_id);
            return room?.getMyMembership() === "join" && room.hasEncryptionStateEvent();
        });
        return { joined: room_id };
    },
    async send({ room_id, body }) {
        const { event_id } = await js.sendTextMessage(room_id, body);
        return { event_id };
    },
    // First upload: no user-interactive auth (MSC3967).
    async bootstrap_cross_signing() {
        const crypto = js.getCrypto();
        if (await crypto.isCrossSigningReady()) return { bootstrapped: reg.user_id };
        await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: (makeRequest) => makeRequest(null) });
        // Bootstrap signs the device in the background; this signs it again
        // and waits for the upload, so the Rust side finds the signature.
        await crypto.crossSignDevice(js.getDeviceId());
        return { bootstrapped: reg.user_id };
    },
    // How the js client judges a device of the Rust client. With UNTIL
    // (a field name), waits until that field is true: the js client
    // refetches a user's keys after the server reports a change, a
    // moment after it happened.
    // On the recovery scenario's client with {recovering: true}.
    async device_status({ user_id, device_id, until, recovering: onRecovering }) {
        const client = onRecovering ? recoveringClient() : js;
        const crypto = client.getCrypto();
        await crypto.getUserDeviceInfo([user_id], true);
        const status = async () => {
            const device = await crypto.getDeviceVerificationStatus(user_id, device_id);
            const identity = await crypto.getUserVerificationStatus(user_id);
            return {
                signed_by_owner: device?.signedByOwner ?? null,
                cross_signing_verified: device?.crossSigningVerified ?? null,
                locally_verified: device?.localVerified ?? null,
                is_verified: device?.isVerified() ?? null,
                identity_known: identity !== null,
                identity_verified: identity?.isVerified() ?? null,
            };
        };
        if (!until) return status();
        return untilComputed(`the js client finds ${until} for ${user_id}'s ${device_id}`,
            [CryptoEvent.DevicesUpdated, CryptoEvent.UserTrustStatusChanged], status, (s) => s[until] === true, client);
    },
    // Verification (CryptoApi): to-device to one device, or in a room.
    async request_verification({ user_id, device_id }) {
        return flowView(follow(await js.getCrypto().requestDeviceVerification(user_id, device_id)));
    },
    // The js client asks in a room only once it knows the user's
    // cross-signing identity, which its key query after the user's
    // bootstrap brings: tried again after each sync until then.
    async request_verification_dm({ user_id, room_id }) {
        let request = null;
        let trying = false;
        const attempt = () => {
            if (trying || request) return;
            trying = true;
            js.getCrypto().requestVerificationDM(user_id, room_id).then(
                (r) => { request = r; flowNews.emit("news"); },
                () => { trying = false; },
            );
        };
        await when(`an in-room request to ${user_id} (its identity known)`, news, () => {
            attempt();
            return request;
        });
        return flowView(follow(request));
    },
    // Waits for a request from USER_ID, and accepts it (ready).
    async accept_verification({ user_id }) {
        const request = await when(`a verification request from ${user_id}`, news, () =>
            incoming.find((r) => r.otherUserId === user_id && r.phase === VerificationPhase.Requested && !flows.has(r.transactionId)));
        const flow = follow(request);
        await request.accept();
        return flowView(flow);
    },
    async start_sas({ transaction_id }) {
        const flow = flowOf(transaction_id);
        await when("the other side is ready", news, () => flow.request.phase === VerificationPhase.Ready);
        await flow.request.startVerification("m.sas.v1");
        return flowView(flow);
    },
    // Waits until the SAS is shown; answers its emoji ([symbol, name] x7)
    // and numbers.
    async sas({ transaction_id }) {
        const flow = flowOf(transaction_id);
        const sas = await when("the js client shows the SAS", news, () => {
            if (flow.request.phase === VerificationPhase.Cancelled) throw new Error(`cancelled: ${flow.request.cancellationCode}`);
            return flow.sas;
        });
        return { emoji: sas.sas.emoji, decimal: sas.sas.decimal };
    },
    async confirm_sas({ transaction_id }) {
        await flowOf(transaction_id).sas.confirm();
        return {};
    },
    // QR codes (bytes as base64): show ours, scan theirs, and confirm
    // that the other device reported our code matched.
    async generate_qr({ transaction_id }) {
        const bytes = await flowOf(transaction_id).request.generateQRCode();
        if (!bytes) throw new Error("no QR code: the js client cannot show one here");
        return { data: Buffer.from(bytes).toString("base64").replace(/=+$/, "") };
    },
    async scan_qr({ transaction_id, data }) {
        const flow = flowOf(transaction_id);
        await when("the other side is ready", news, () => flow.request.phase === VerificationPhase.Ready);
        await flow.request.scanQRCode(new Uint8ClampedArray(Buffer.from(data, "base64")));
        return flowView(flow);
    },
    async confirm_qr_scanned({ transaction_id }) {
        const flow = flowOf(transaction_id);
        const reciprocate = await when("the other device scanned our QR code", news, () => {
            if (flow.request.phase === VerificationPhase.Cancelled) throw new Error(`cancelled: ${flow.request.cancellationCode}`);
            return flow.reciprocate;
        });
        reciprocate.confirm();
        return flowView(flow);
    },
    // Waits until the flow ends (Done or Cancelled).
    async verification_outcome({ transaction_id }) {
        const flow = flowOf(transaction_id);
        await when("the verification ends", news, () =>
            [VerificationPhase.Done, VerificationPhase.Cancelled].includes(flow.request.phase) && (!flow.outcome || flow.settled));
        return { ...flowView(flow), verifier: flow.outcome ? await flow.outcome : null };
    },
    // A new js user, on its first device: cross-signing, then secret
    // storage with a recovery key and a new key backup
    // (bootstrapSecretStorage with setupNewKeyBackup, which calls
    // resetKeyBackup and stores the backup key in secret storage); it sends
    // BODIES in an encrypted room of its own and waits until the backup
    // holds their room key. Answers what the user's new device needs.
    async recovery_setup({ bodies }) {
        const owner = await registerUser("recovery");
        const client = await startRecoveringClient(owner);
        const crypto = client.getCrypto();
        await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: (makeRequest) => makeRequest(null) });
        let recoveryKey = null;
        await crypto.bootstrapSecretStorage({
            createSecretStorageKey: async () => {
                const key = await crypto.createRecoveryKeyFromPassphrase();
                recoveryKey = key.encodedPrivateKey;
                return key;
            },
            setupNewKeyBackup: true,
        });
        const { room_id } = await client.createRoom({
            initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
        });
        await when("the recovery client has its encrypted room", [[client, RoomEvent.MyMembership]],
            () => client.getRoom(room_id)?.hasEncryptionStateEvent());
        for (const body of bodies) await client.sendTextMessage(room_id, body);
        const backup = await untilComputed("the key backup holds the room key", [CryptoEvent.KeyBackupSessionsRemaining],
            () => client.http.authedRequest(Method.Get, "/room_keys/version"), (info) => info.count >= 1, client);
        return {
            user_id: owner.user_id, password: owner.password, device_id: owner.device_id,
            recovery_key: recoveryKey, room_id, backup_algorithm: backup.algorithm,
        };
    },
    // A new js device of USER_ID's: logs in and, with the recovery key the
    // user typed, imports the cross-signing keys from secret storage
    // (bootstrapCrossSigning, which then signs this device).
    async recovery_login({ user_id, password, recovery_key }) {
        const login = await anon.loginRequest({
            type: "m.login.password",
            identifier: { type: "m.id.user", user: user_id },
            password,
            initial_device_display_name: "interop js recovery",
        });
        const client = await startRecoveringClient(login);
        ring.typed = recovery_key;
        const crypto = client.getCrypto();
        // The keys are imported only once the user's public identity is
        // known to this device (else "importCrossSigningKeys failed").
        await untilComputed("the recovery client knows its user's identity", [CryptoEvent.KeysChanged],
            () => crypto.userHasCrossSigningKeys(user_id, true), (has) => has, client);
        await crypto.bootstrapCrossSigning({});
        return { device_id: login.device_id };
    },
    // The recovery client restores the key backup with the backup key it
    // reads from secret storage (opened with RECOVERY_KEY):
    // loadSessionBackupPrivateKeyFromSecretStorage, checkKeyBackupAndEnable,
    // restoreKeyBackup; then waits until BODIES decrypt in ROOM_ID.
    // Answers the backup's algorithm, and what was restored or the error
    // that stopped the js-sdk.
    async recovery_restore({ recovery_key, room_id, bodies }) {
        const client = recoveringClient();
        const crypto = client.getCrypto();
        ring.typed = recovery_key;
        // The js-sdk keeps the server's backup version from its last look:
        // a new one since is seen only after this check.
        await crypto.checkKeyBackupAndEnable();
        const info = await crypto.getKeyBackupInfo();
        let restored;
        try {
            await crypto.loadSessionBackupPrivateKeyFromSecretStorage();
            await crypto.checkKeyBackupAndEnable();
            restored = await crypto.restoreKeyBackup();
        } catch (err) {
            return { algorithm: info?.algorithm, error: String(err?.message ?? err) };
        }
        await untilAllDecrypted(client, room_id, bodies);
        return { algorithm: info?.algorithm, imported: restored.imported, total: restored.total, error: null };
    },
    // Stops the recovery client and logs it out (its device is deleted).
    async recovery_finish() {
        const client = recoveringClient();
        stopSyncLoop(recovering);
        recovering = null;
        await client.logout();
        return {};
    },
    // How the js client shows an event it decrypted: its shield.
    async encryption_info({ room_id, body }) {
        const event = js.getRoom(room_id)?.getLiveTimeline().getEvents().find((e) => e.getContent().body === body);
        if (!event) throw new Error(`no event "${body}"`);
        const info = await js.getCrypto().getEncryptionInfoForEvent(event);
        return { shield_colour: EventShieldColour[info?.shieldColour] ?? null, shield_reason: EventShieldReason[info?.shieldReason] ?? null };
    },
    async expect({ room_id, body }) {
        const event = await when(`the js client decrypts "${body}"`, [[js, RoomEvent.Timeline], [js, MatrixEventEvent.Decrypted]], () =>
            js.getRoom(room_id)?.getLiveTimeline().getEvents().find((e) => !e.isBeingDecrypted() && e.getContent().body === body));
        return { sender: event.getSender(), wire_type: event.getWireType(), type: event.getType() };
    },
};

const api = createServer((req, res) => {
    let raw = "";
    req.on("data", (chunk) => { raw += chunk; });
    req.on("end", async () => {
        const command = commands[req.url.slice(1)];
        try {
            if (!command) throw new Error(`no command ${req.url}`);
            const answer = await command(JSON.parse(raw || "{}"));
            res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(answer));
        } catch (err) {
            res.writeHead(500, { "content-type": "application/json" }).end(JSON.stringify({ error: String(err?.message ?? err) }));
        }
    });
});
await new Promise((resolve) => api.listen(0, "127.0.0.1", resolve));
const peerUrl = `http://127.0.0.1:${api.address().port}`;

await check("the myelin-sdk client and matrix-js-sdk exchange encrypted messages and verify each other", async () => {
    const status = await new Promise((resolve) => {
        // One test at a time: they share the one js-sdk client.
        const child = spawn("cargo", [
            "test", "-p", "myelin-tests", "--locked", "--test", "it", "--",
            "--ignored", "--nocapture", "--test-threads=1", process.env.MYELIN_INTEROP_TESTS || "sdk_interop::",
        ], {
            cwd: process.env.MYELIN_INTEROP_REPO || process.cwd(),
            stdio: "inherit",
            env: { ...process.env, MYELIN_SDK_HOMESERVER: baseUrl, MYELIN_INTEROP_PEER: peerUrl, MYELIN_INTEROP_PEER_USER: reg.user_id },
        });
        child.on("exit", (code) => resolve(code));
    });
    if (status !== 0) throw new Error(`the Rust side exited with ${status}`);
});
api.close();
finish();
