// Interop of the two crypto stacks: a myelin-sdk client (Rust, the ignored
// test sdk_interop::myelin_sdk_and_matrix_js_sdk_exchange_encrypted_messages)
// and matrix-js-sdk with its Rust crypto (matrix-sdk-crypto-wasm) exchange
// encrypted messages in both directions through the homeserver given on the
// command line.
//
//   node sdk-crypto.mjs HOMESERVER_URL     (normally through run.sh)
//
// This script registers the js-sdk user, starts its sync loop, and serves a
// small loopback HTTP API the Rust test drives it with (POST JSON, answers
// JSON): /join {room_id}, /send {room_id, body}, /expect {room_id, body}
// (waits until that body decrypts; answers the sender and wire type),
// /bootstrap_cross_signing, /device_status {user_id, device_id} (whether
// the js client finds that device signed by its owner). It
// then runs the Rust test with MYELIN_SDK_HOMESERVER, MYELIN_INTEROP_PEER
// (the API's URL) and MYELIN_INTEROP_PEER_USER, and exits with its status.
// MYELIN_INTEROP_REPO names the checkout to run cargo in (default: the
// current directory).

import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { MatrixEventEvent, RoomEvent, ClientEvent } from "matrix-js-sdk";
import {
    baseUrl, check, collectSyncPhaseFailures, finish, isReady, limitRunTime, registerUser, startSyncLoop, when,
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
        await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: (makeRequest) => makeRequest(null) });
        // Bootstrap signs the device in the background; this signs it again
        // and waits for the upload, so the Rust side finds the signature.
        await crypto.crossSignDevice(js.getDeviceId());
        return { bootstrapped: reg.user_id };
    },
    // How the js client judges a device of the Rust client, after fetching
    // that user's keys afresh.
    async device_status({ user_id, device_id }) {
        const crypto = js.getCrypto();
        await crypto.getUserDeviceInfo([user_id], true);
        const status = await crypto.getDeviceVerificationStatus(user_id, device_id);
        const identity = await crypto.getUserVerificationStatus(user_id);
        return { signed_by_owner: status?.signedByOwner ?? null, cross_signing_verified: status?.crossSigningVerified ?? null, identity_known: identity !== null };
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

await check("the myelin-sdk client and matrix-js-sdk exchange encrypted messages both ways", async () => {
    const status = await new Promise((resolve) => {
        const child = spawn("cargo", [
            "test", "-p", "myelin-tests", "--locked", "--test", "it", "--",
            "--ignored", "--nocapture", "--exact", "sdk_interop::myelin_sdk_and_matrix_js_sdk_exchange_encrypted_messages",
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
