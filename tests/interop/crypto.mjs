// Interop test of end-to-end encryption: matrix-js-sdk with its Rust crypto
// (matrix-sdk-crypto-wasm, keys in memory) on three devices of two users
// exchanges encrypted messages through the homeserver given on the command
// line, which only ever sees ciphertext.
//
//   node crypto.mjs HOMESERVER_URL      (normally through run.sh)
//
// Alice (one device) and bob (a first device, then a second one that logs in
// later) run the SDK's own sync loops. Alice creates an encrypted room and
// invites bob; every device decrypts every message sent after it joined, in
// both directions; bob's later device decrypts new messages but not the one
// sent before it existed; raw /messages and /sync responses carry only
// m.room.encrypted events and Olm-encrypted to-device messages, never the
// plaintext. Alice then bootstraps cross-signing (no password the first
// time) and resets it (the password is required).
//
// Output and environment as smoke.mjs.

import { randomBytes } from "node:crypto";
import { ClientEvent, MatrixEventEvent, RoomEvent } from "matrix-js-sdk";
import { CryptoEvent } from "matrix-js-sdk/lib/crypto-api/index.js";
import {
    anon, answeredExchanges, check, collectSyncPhaseFailures, exchanges, expect, expectMatrixError, finish, isEventId, isReady, isRoomId, limitRunTime,
    registerUser, startSyncLoop, stopSyncLoop, SYNC_WAIT_MS, tag, when,
} from "./harness.mjs";

limitRunTime(180_000);

const ENCRYPTION = { algorithm: "m.megolm.v1.aes-sha2" };
// Every plaintext this test sends; none may appear in anything the server hands out.
const secrets = [];
const secret = (what) => {
    const text = `${what} ${randomBytes(9).toString("base64url")}`;
    secrets.push(text);
    return text;
};

let aliceReg;
let bobReg;
await check("POST /register creates alice and bob", async () => {
    aliceReg = await registerUser("crypto_alice");
    bobReg = await registerUser("crypto_bob");
    return `${aliceReg.user_id}, ${bobReg.user_id}`;
});

collectSyncPhaseFailures();
const startOpts = { initialSyncLimit: 20 };
const aliceLoop = await startSyncLoop("alice", aliceReg, startOpts, { rustCrypto: true });
const bob1Loop = await startSyncLoop("bob-1", bobReg, startOpts, { rustCrypto: true });
const alice = aliceLoop.client;
const bob1 = bob1Loop.client;

// The keys a device's own crypto uploaded, as the server hands them to others.
async function queriedDevices(client, userId) {
    const res = await client.http.authedRequest("POST", "/keys/query", undefined, { device_keys: { [userId]: [] } });
    return res.device_keys?.[userId] ?? {};
}

// Resolves once WHO's SDK has had a successful answer to METHOD PATH_SUFFIX.
const answered = (who, method, pathSuffix, what) =>
    when(what, [[exchanges, "answered"]], () =>
        answeredExchanges.some((e) => e.who === who && e.method === method && e.path.endsWith(pathSuffix) && e.status === 200));

await check("both crypto clients start their sync loops and upload their device keys", async () => {
    await when("both sync loops are PREPARED", [], () => isReady(aliceLoop) && isReady(bob1Loop));
    await answered("bob-1", "POST", "/keys/upload", "bob's client uploads its keys");
    const keys = (await queriedDevices(alice, bobReg.user_id))[bobReg.device_id]?.keys ?? {};
    const ownView = await bob1.getCrypto().getOwnDeviceKeys();
    expect(keys[`ed25519:${bobReg.device_id}`] === ownView.ed25519 && keys[`curve25519:${bobReg.device_id}`] === ownView.curve25519,
        `the server hands out keys ${JSON.stringify(keys)} for bob's device, which holds ${JSON.stringify(ownView)}`);
    return `bob's device ${bobReg.device_id}`;
});

let roomId;
await check("alice creates an encrypted room and invites bob, who joins", async () => {
    const res = await alice.createRoom({
        preset: "private_chat",
        name: `Crypto room ${tag}`,
        invite: [bobReg.user_id],
        initial_state: [{ type: "m.room.encryption", state_key: "", content: ENCRYPTION }],
    });
    expect(isRoomId(res.room_id), `room_id is ${JSON.stringify(res.room_id)}`);
    roomId = res.room_id;
    await when("bob's client sees the invite", [[bob1, ClientEvent.Room]], () => bob1.getRoom(roomId)?.getMyMembership() === "invite");
    await bob1.joinRoom(roomId);
    await when("alice's client shows bob joined", [[alice, RoomEvent.Timeline]],
        () => alice.getRoom(roomId)?.getMember(bobReg.user_id)?.membership === "join");
    await when("bob's client has the joined room with its encryption state", [[bob1, RoomEvent.MyMembership]], () => {
        const room = bob1.getRoom(roomId);
        return room?.getMyMembership() === "join" && room.hasEncryptionStateEvent();
    });
    for (const client of [alice, bob1]) {
        expect(await client.getCrypto().isEncryptionEnabledInRoom(roomId), `${client.getUserId()}'s crypto does not see the room as encrypted`);
    }
    return roomId;
});

// Resolves with the decrypted event EVENT_ID of ROOM once CLIENT has it;
// fails if it stays undecryptable. A failed attempt is not the end: the
// timeline event may arrive before its room key, and the SDK decrypts it
// again when the key comes.
function decryptedIn(room, client, eventId, what) {
    return when(what, [[client, RoomEvent.Timeline], [client, MatrixEventEvent.Decrypted]], () => {
        const event = client.getRoom(room)?.findEventById(eventId);
        if (!event || event.isBeingDecrypted() || event.isDecryptionFailure() || event.getType() === "m.room.encrypted") {
            return null;
        }
        return event;
    });
}
const decrypted = (client, eventId, what) => decryptedIn(roomId, client, eventId, what);

// The events sendAndDecrypt sent into the encrypted room.
const sentInRoom = [];

// Sends BODY from CLIENT and checks that each of READERS decrypts it as sent.
async function sendAndDecrypt(client, body, readers) {
    const { event_id } = await client.sendTextMessage(roomId, body);
    expect(isEventId(event_id), `event_id is ${JSON.stringify(event_id)}`);
    sentInRoom.push(event_id);
    for (const [name, reader] of readers) {
        const event = await decrypted(reader, event_id, `${name} decrypts ${event_id}`);
        expect(event.getWireType() === "m.room.encrypted", `${name} got it as ${event.getWireType()}, not m.room.encrypted`);
        expect(event.getContent().body === body, `${name} decrypted ${JSON.stringify(event.getContent())}`);
        expect(event.getSender() === client.getUserId(), `${name} sees sender ${event.getSender()}`);
    }
    return event_id;
}

let beforeSecondDevice;
await check("alice's encrypted message reaches bob's device, decrypted", async () => {
    beforeSecondDevice = await sendAndDecrypt(alice, secret("alice to bob"), [["bob-1", bob1]]);
    return beforeSecondDevice;
});

await check("bob's encrypted reply reaches alice, decrypted", async () => {
    return await sendAndDecrypt(bob1, secret("bob to alice"), [["alice", alice]]);
});

let bob2Loop;
// Resolves once CLIENT's crypto lists DEVICE_ID among USER_ID's devices (the
// list it shares room keys with). The SDK re-queries a user's keys when
// device_lists.changed names them; the first change (the login) can come
// before the new device has uploaded keys, so this waits for the SDK's own
// view rather than for the first change.
async function untilCryptoKnows(client, userId, deviceId, what) {
    const deadline = Date.now() + SYNC_WAIT_MS;
    for (;;) {
        const updated = new Promise((resolve) => client.once(CryptoEvent.DevicesUpdated, resolve));
        const devices = await client.getCrypto().getUserDeviceInfo([userId]);
        if (devices.get(userId)?.has(deviceId)) return;
        const left = deadline - Date.now();
        expect(left > 0, `${what}: not seen within ${SYNC_WAIT_MS} ms`);
        await Promise.race([updated, new Promise((resolve) => setTimeout(resolve, left))]);
    }
}

await check("bob logs in a second device; alice learns of it through device_lists.changed", async () => {
    const bob2Reg = await anon.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: bobReg.user_id },
        password: bobReg.password,
        initial_device_display_name: "interop crypto bob 2",
    });
    expect(bob2Reg.device_id !== bobReg.device_id, `the login reused device ${bob2Reg.device_id}`);
    bob2Loop = await startSyncLoop("bob-2", bob2Reg, startOpts, { rustCrypto: true });
    await when("bob's second sync loop is PREPARED", [], () => isReady(bob2Loop));
    await when("alice's sync reports bob in device_lists.changed", [[alice, ClientEvent.Sync]],
        () => aliceLoop.rawSyncs.some((s) => s.device_lists?.changed?.includes(bobReg.user_id)));
    await answered("bob-2", "POST", "/keys/upload", "bob's second client uploads its keys");
    const devices = await queriedDevices(alice, bobReg.user_id);
    expect(devices[bob2Reg.device_id], `keys/query lists bob's devices ${JSON.stringify(Object.keys(devices))}, not ${bob2Reg.device_id}`);
    await untilCryptoKnows(alice, bobReg.user_id, bob2Reg.device_id, "alice's crypto lists bob's second device");
    return `bob's devices: ${Object.keys(devices).sort().join(", ")}`;
});
const bob2 = bob2Loop.client;

await check("alice's next message is decrypted on both of bob's devices", async () => {
    return await sendAndDecrypt(alice, secret("alice to both devices"), [["bob-1", bob1], ["bob-2", bob2]]);
});

await check("a message from bob's second device is decrypted by alice and by bob's first device", async () => {
    return await sendAndDecrypt(bob2, secret("bob's second device"), [["alice", alice], ["bob-1", bob1]]);
});

// Megolm keys go to the devices present when a session is shared: the message
// sent before bob's second device existed stays unreadable there.
await check("bob's second device cannot decrypt the message sent before it logged in", async () => {
    const event = await when("bob's second device has the earlier event", [[bob2, RoomEvent.Timeline]],
        () => bob2.getRoom(roomId)?.findEventById(beforeSecondDevice));
    await when("its decryption attempt finishes", [[bob2, MatrixEventEvent.Decrypted]], () => !event.isBeingDecrypted());
    expect(event.isDecryptionFailure(), `it decrypted to ${JSON.stringify(event.getContent())}`);
    return event.decryptionFailureReason ?? "undecryptable";
});

// Myelin's E2E-only rooms (spec-notes/e2e-only-rooms.md): the real client
// works unchanged, and a plaintext send is refused before it is stored.
if (process.env.MYELIN_INTEROP_E2E_ONLY_POLICY === "1") {
    const policy = { type: "org.myelin.room.policy", state_key: "", content: { e2e_required: true } };
    let strictRoom;
    await check("alice creates an E2E-only room with bob; his device decrypts her message there", async () => {
        const res = await alice.createRoom({
            preset: "private_chat",
            invite: [bobReg.user_id],
            initial_state: [{ type: "m.room.encryption", state_key: "", content: ENCRYPTION }, policy],
        });
        strictRoom = res.room_id;
        await when("bob's client sees the invite", [[bob1, ClientEvent.Room]], () => bob1.getRoom(strictRoom)?.getMyMembership() === "invite");
        await bob1.joinRoom(strictRoom);
        await when("bob's client has the joined room with its encryption state", [[bob1, RoomEvent.MyMembership]], () => {
            const room = bob1.getRoom(strictRoom);
            return room?.getMyMembership() === "join" && room.hasEncryptionStateEvent();
        });
        // A client that has not synced the room's m.room.encryption yet sends
        // plaintext (the SDK does, right after createRoom); in an E2E-only
        // room the server refuses that with 403, so wait as a careful app would.
        await when("alice's client shows bob joined the E2E-only room", [[alice, RoomEvent.Timeline]],
            () => alice.getRoom(strictRoom)?.getMember(bobReg.user_id)?.membership === "join" && alice.getRoom(strictRoom).hasEncryptionStateEvent());
        const body = secret("in the E2E-only room");
        const { event_id } = await alice.sendTextMessage(strictRoom, body);
        const event = await decryptedIn(strictRoom, bob1, event_id, `bob decrypts ${event_id}`);
        expect(event.getContent().body === body, `bob decrypted ${JSON.stringify(event.getContent())}`);
        return strictRoom;
    });
    await check("a raw plaintext send into the E2E-only room is refused with 403 ORG.MYELIN_E2E_REQUIRED", async () => {
        const body = secret("plaintext that must not be stored");
        const err = await expectMatrixError(
            alice.http.authedRequest("PUT", `/rooms/${encodeURIComponent(strictRoom)}/send/m.room.message/${tag}-plain`, undefined, { msgtype: "m.text", body }),
            "a plaintext send",
        );
        expect(err.httpStatus === 403 && err.errcode === "ORG.MYELIN_E2E_REQUIRED", `HTTP ${err.httpStatus} ${err.errcode}: ${JSON.stringify(err.data)}`);
        // Not in the room's history either; the checks below look for it in
        // every response the server gave.
        const res = await alice.http.authedRequest("GET", `/rooms/${encodeURIComponent(strictRoom)}/messages`, { dir: "b", limit: "100" });
        expect(!JSON.stringify(res).includes(body), "the refused plaintext is in /messages");
    });
}

// What the server hands out: ciphertext only.
const leaks = (json) => secrets.filter((s) => json.includes(s));

await check("raw GET /messages returns only m.room.encrypted for the messages, and no plaintext", async () => {
    const res = await alice.http.authedRequest("GET", `/rooms/${encodeURIComponent(roomId)}/messages`, { dir: "b", limit: "100" });
    const messages = res.chunk.filter((e) => e.state_key === undefined && e.type !== "m.room.redaction");
    const ids = messages.map((e) => e.event_id).sort();
    expect(JSON.stringify(ids) === JSON.stringify([...sentInRoom].sort()), `non-state events ${JSON.stringify(ids)}, expected the ${sentInRoom.length} sent`);
    const plain = messages.filter((e) => e.type !== "m.room.encrypted");
    expect(plain.length === 0, `non-encrypted events: ${JSON.stringify(plain.map((e) => e.type))}`);
    for (const e of messages) {
        expect(e.content.algorithm === ENCRYPTION.algorithm && typeof e.content.ciphertext === "string",
            `event ${e.event_id} content is ${JSON.stringify(e.content).slice(0, 200)}`);
    }
    const leaked = leaks(JSON.stringify(res));
    expect(leaked.length === 0, `plaintext in /messages: ${JSON.stringify(leaked)}`);
    return `${messages.length} m.room.encrypted events`;
});

await check("every to-device message the server delivered was Olm-encrypted, and no sync carried plaintext", async () => {
    let toDevice = 0;
    for (const loop of [aliceLoop, bob1Loop, bob2Loop]) {
        for (const sync of loop.rawSyncs) {
            for (const e of sync.to_device?.events ?? []) {
                toDevice += 1;
                expect(e.type === "m.room.encrypted" && e.content?.algorithm === "m.olm.v1.curve25519-aes-sha2",
                    `${loop.label} got a ${e.type} to-device message with algorithm ${e.content?.algorithm}`);
            }
            const leaked = leaks(JSON.stringify(sync));
            expect(leaked.length === 0, `plaintext in ${loop.label}'s sync: ${JSON.stringify(leaked)}`);
        }
    }
    expect(toDevice >= 3, `only ${toDevice} to-device messages: room keys should have reached three devices`);
    return `${toDevice} encrypted to-device messages`;
});

// Cross-signing: the first upload needs no password (MSC3967), and the
// server merges the self-signing signature the SDK uploads into alice's
// device keys as others are served them. Replacing the keys needs the
// password.
const passwordAuth = (reg, session) =>
    ({ type: "m.login.password", identifier: { type: "m.id.user", user: reg.user_id }, password: reg.password, session });

// Resolves once WHO's SDK has had a successful answer to METHOD PATH_SUFFIX
// among the exchanges after the first FROM.
const answeredSince = (from, who, method, pathSuffix, what) =>
    when(what, [[exchanges, "answered"]], () =>
        answeredExchanges.slice(from).some((e) => e.who === who && e.method === method && e.path.endsWith(pathSuffix) && e.status === 200));

await check("alice bootstraps cross-signing without a password; her device carries her self-signing signature", async () => {
    const start = answeredExchanges.length;
    let uploads = 0;
    await alice.getCrypto().bootstrapCrossSigning({
        authUploadDeviceSigningKeys: async (makeRequest) => {
            uploads += 1;
            await makeRequest(null);
        },
    });
    expect(uploads === 1, `the keys were uploaded ${uploads} times`);
    // Signing her own device with the new self-signing key is the SDK's
    // last upload; the server merges that signature into the device keys.
    await answeredSince(start, "alice", "POST", "/keys/signatures/upload", "alice's client signs her device");
    const res = await bob1.http.authedRequest("POST", "/keys/query", undefined, { device_keys: { [aliceReg.user_id]: [] } });
    const selfSigning = Object.keys(res.self_signing_keys?.[aliceReg.user_id]?.keys ?? {})[0];
    const master = Object.keys(res.master_keys?.[aliceReg.user_id]?.keys ?? {})[0];
    expect(master && selfSigning, `bob is served master ${master} and self-signing ${selfSigning} keys`);
    const signatures = res.device_keys?.[aliceReg.user_id]?.[aliceReg.device_id]?.signatures?.[aliceReg.user_id] ?? {};
    expect(typeof signatures[selfSigning] === "string" && typeof signatures[`ed25519:${aliceReg.device_id}`] === "string",
        `alice's device is served with signatures by ${JSON.stringify(Object.keys(signatures))}`);
    return `signed by ${Object.keys(signatures).length} keys`;
});

// The master key the server holds for a user, as anyone sees it.
async function masterKeyOf(client, userId) {
    const res = await client.http.authedRequest("POST", "/keys/query", undefined, { device_keys: { [userId]: [] } });
    return Object.values(res.master_keys?.[userId]?.keys ?? {})[0];
}

await check("resetting alice's cross-signing keys needs her password", async () => {
    const before = await masterKeyOf(bob1, aliceReg.user_id);
    let refusal;
    await alice.getCrypto().bootstrapCrossSigning({
        setupNewCrossSigning: true,
        authUploadDeviceSigningKeys: async (makeRequest) => {
            try {
                await makeRequest(null);
            } catch (err) {
                refusal = err;
                await makeRequest(passwordAuth(aliceReg, err.data?.session));
                return;
            }
            throw new Error("the server replaced cross-signing keys without the password");
        },
    });
    expect(refusal?.httpStatus === 401 && Array.isArray(refusal.data?.flows),
        `without the password: ${refusal?.httpStatus} ${JSON.stringify(refusal?.data)}`);
    const after = await masterKeyOf(bob1, aliceReg.user_id);
    expect(before && after && after !== before, `the master key went from ${before} to ${after}`);
    return `${refusal.httpStatus} with flows ${JSON.stringify(refusal.data.flows.map((f) => f.stages))}, then 200`;
});

await check("the sync loops stop cleanly", async () => {
    for (const loop of [bob2Loop, bob1Loop, aliceLoop]) {
        expect(!loop.trouble, loop.trouble);
        stopSyncLoop(loop);
    }
});

finish();
