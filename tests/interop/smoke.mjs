// Interop smoke test: an unmodified matrix-js-sdk registers a user, logs in,
// calls whoami and logs out against the homeserver given on the command line;
// then, with two more users, creates rooms, invites, joins, sends, sets and
// reads state, redacts, manages aliases, lists the public directory and
// kicks, bans and unbans, all with request-level calls; finally alice and bob
// run the SDK's own sync loop (startClient) and see a room, an invite, a join
// and messages arrive through it, resolve a local echo, and page history back
// through /messages.
//
//   node smoke.mjs HOMESERVER_URL      (normally through run.sh)
//
// Prints one line per check and closes with "N passed, M failed". Exits 1 on
// the first failed check (later checks depend on earlier ones) and prints the
// HTTP exchanges that led to it, so a server author can replay them.
//
// MYELIN_INTEROP_SERVER_NAME, if set, is the server name user IDs must carry.
// MYELIN_INTEROP_SDK_LOG=debug|info|warn|error sets the SDK's log level.

import { randomBytes } from "node:crypto";
import { ClientEvent, RoomEvent, RoomMemberEvent } from "matrix-js-sdk";
import {
    anon, check, client, collectSyncPhaseFailures, eventually, expect, expectMatrixError, expectRefusal,
    expectedServerName, finish, holdSyncs, isEventId, isNonEmptyString, isReady, isRoomId, limitRunTime,
    rawTimeline, recordLiveMessages, registerUser, requestsTo, startSyncLoop, stopSyncLoop, tag, when,
} from "./harness.mjs";

// ---- the scenario ---------------------------------------------------------

limitRunTime(180_000);

const username = `interop_${Date.now().toString(36)}_${randomBytes(4).toString("hex")}`;
const password = randomBytes(18).toString("base64url");

await check("GET /versions lists a spec version", async () => {
    const res = await anon.getVersions();
    expect(Array.isArray(res.versions) && res.versions.length > 0, `versions is not a non-empty array: ${JSON.stringify(res)}`);
    return `latest ${res.versions.at(-1)}`;
});

await check("GET /login offers m.login.password", async () => {
    const res = await anon.loginFlows();
    const types = (res.flows ?? []).map((f) => f.type);
    expect(types.includes("m.login.password"), `flows are ${JSON.stringify(res.flows)}`);
});

let session;
await check("POST /register without auth answers 401 with a session and an m.login.dummy flow", async () => {
    const err = await expectMatrixError(
        anon.registerRequest({ username, password, initial_device_display_name: "interop register" }),
        "POST /register without auth",
    );
    expect(err.httpStatus === 401, `HTTP ${err.httpStatus}, expected 401: ${JSON.stringify(err.data)}`);
    session = err.data?.session;
    expect(isNonEmptyString(session), `no session in ${JSON.stringify(err.data)}`);
    const flows = err.data?.flows ?? [];
    const dummyOnly = flows.some(
        (f) => Array.isArray(f.stages) && f.stages.length > 0 && f.stages.every((s) => s === "m.login.dummy"),
    );
    expect(dummyOnly, `no flow made only of m.login.dummy in ${JSON.stringify(flows)}`);
});

let registered;
await check("POST /register with m.login.dummy creates the account", async () => {
    registered = await anon.registerRequest({
        username,
        password,
        initial_device_display_name: "interop register",
        auth: { type: "m.login.dummy", session },
    });
    const { user_id, device_id, access_token } = registered;
    expect(isNonEmptyString(user_id), `no user_id in the response`);
    const [localpart, ...domain] = user_id.slice(1).split(":");
    expect(user_id.startsWith("@") && localpart === username && domain.length > 0, `user_id ${user_id} is not @${username}:<server>`);
    if (expectedServerName) {
        expect(domain.join(":") === expectedServerName, `user_id ${user_id} is not on ${expectedServerName}`);
    }
    expect(isNonEmptyString(device_id), `no device_id in ${JSON.stringify(registered)}`);
    expect(isNonEmptyString(access_token), `no access_token in the response`);
    return `${user_id}, device ${device_id}`;
});

const registeredClient = client(registered.access_token);

await check("GET /account/whoami with the registration token names the new user and device", async () => {
    const res = await registeredClient.whoami();
    expect(res.user_id === registered.user_id, `user_id ${res.user_id}, expected ${registered.user_id}`);
    expect(res.device_id === registered.device_id, `device_id ${res.device_id}, expected ${registered.device_id}`);
});

await check("POST /login with a wrong password answers 403 M_FORBIDDEN", async () => {
    const err = await expectMatrixError(
        anon.loginRequest({
            type: "m.login.password",
            identifier: { type: "m.id.user", user: username },
            password: `${password}-wrong`,
        }),
        "POST /login with a wrong password",
    );
    expect(err.httpStatus === 403 && err.errcode === "M_FORBIDDEN", `HTTP ${err.httpStatus} ${err.errcode}, expected 403 M_FORBIDDEN`);
});

let loggedIn;
await check("POST /login with m.login.password returns a new device for the same user", async () => {
    loggedIn = await anon.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: username },
        password,
        initial_device_display_name: "interop login",
    });
    const { user_id, device_id, access_token } = loggedIn;
    expect(user_id === registered.user_id, `user_id ${user_id}, expected ${registered.user_id}`);
    expect(isNonEmptyString(device_id), `no device_id in ${JSON.stringify({ ...loggedIn, access_token: "<redacted>" })}`);
    expect(device_id !== registered.device_id, `login reused the registration device ${device_id}`);
    expect(isNonEmptyString(access_token), `no access_token in the response`);
    expect(access_token !== registered.access_token, `login returned the registration's access token`);
    return `device ${device_id}`;
});

const loggedInClient = client(loggedIn.access_token);

await check("GET /account/whoami with the login token names the same user and the login device", async () => {
    const res = await loggedInClient.whoami();
    expect(res.user_id === loggedIn.user_id, `user_id ${res.user_id}, expected ${loggedIn.user_id}`);
    expect(res.device_id === loggedIn.device_id, `device_id ${res.device_id}, expected ${loggedIn.device_id}`);
});

await check("POST /logout succeeds", async () => {
    await loggedInClient.logout(true);
});

await check("GET /account/whoami with the logged-out token answers 401 M_UNKNOWN_TOKEN", async () => {
    const err = await expectMatrixError(client(loggedIn.access_token).whoami(), "whoami after logout");
    expect(err.httpStatus === 401 && err.errcode === "M_UNKNOWN_TOKEN", `HTTP ${err.httpStatus} ${err.errcode}, expected 401 M_UNKNOWN_TOKEN`);
});

await check("the registration device's token still works after the other device logged out", async () => {
    const res = await registeredClient.whoami();
    expect(res.user_id === registered.user_id && res.device_id === registered.device_id, `whoami returned ${JSON.stringify(res)}`);
});


// ---- rooms ----------------------------------------------------------------
//
// Two more users join the first one (alice): bob, who is invited into a
// private room, and carol, who is kicked, banned and unbanned in a public one.
// Until the sync-loop part below, every call is one of the SDK's
// request-level methods and no sync loop runs. What each check
// expects is what the Client-Server API spec says (clauses named inline),
// not what one server happens to answer.

const alice = registeredClient;
const aliceId = registered.user_id;
// The server name is whatever follows the first colon of a user ID.
const serverName = aliceId.slice(aliceId.indexOf(":") + 1);

let bobReg;
await check("POST /register creates a second user (bob)", async () => {
    bobReg = await registerUser("bob");
    return bobReg.user_id;
});
let carolReg;
await check("POST /register creates a third user (carol)", async () => {
    carolReg = await registerUser("carol");
    return carolReg.user_id;
});
const bob = client(bobReg.access_token);
const bobId = bobReg.user_id;
const carol = client(carolReg.access_token);
const carolId = carolReg.user_id;

// -- a private room with a name, a topic and an alias

const aliasLocalpart = `interop_room_${tag}`;
const alias = `#${aliasLocalpart}:${serverName}`;
const roomName = `Interop room ${tag}`;
const firstTopic = `first topic ${tag}`;
let roomId;
await check("POST /createRoom (private_chat, name, topic, room_alias_name) returns a room ID", async () => {
    const res = await alice.createRoom({ preset: "private_chat", name: roomName, topic: firstTopic, room_alias_name: aliasLocalpart });
    expect(isRoomId(res.room_id), `room_id is ${JSON.stringify(res.room_id)}`);
    roomId = res.room_id;
    return roomId;
});

// Spec, POST /createRoom, 400: "M_ROOM_IN_USE if the room alias is already taken".
await check("POST /createRoom with a room_alias_name already in use answers 400 M_ROOM_IN_USE", async () => {
    await expectRefusal(alice.createRoom({ preset: "private_chat", room_alias_name: aliasLocalpart }), "createRoom with a taken alias", 400, "M_ROOM_IN_USE");
});

// Spec, POST /createRoom, 400: "M_UNSUPPORTED_ROOM_VERSION if the room version is not supported".
await check("POST /createRoom with an unknown room_version answers 400 M_UNSUPPORTED_ROOM_VERSION", async () => {
    await expectRefusal(alice.createRoom({ room_version: "interop-no-such-version" }), "createRoom with an unknown version", 400, "M_UNSUPPORTED_ROOM_VERSION");
});

await check("GET state m.room.create names a room version", async () => {
    const content = await alice.getStateEvent(roomId, "m.room.create", "");
    expect(isNonEmptyString(content.room_version), `content is ${JSON.stringify(content)}`);
    return `version ${content.room_version}`;
});

// Spec, POST /createRoom: the request implies m.room.canonical_alias (for
// room_alias_name), the preset's join rules (private_chat: invite), and the
// m.room.name and m.room.topic events.
await check("GET state reads back the name, topic, canonical alias and invite-only join rule", async () => {
    const name = await alice.getStateEvent(roomId, "m.room.name", "");
    expect(name.name === roomName, `m.room.name is ${JSON.stringify(name)}`);
    const topic = await alice.getStateEvent(roomId, "m.room.topic", "");
    expect(topic.topic === firstTopic, `m.room.topic is ${JSON.stringify(topic)}`);
    const canonical = await alice.getStateEvent(roomId, "m.room.canonical_alias", "");
    expect(canonical.alias === alias, `m.room.canonical_alias is ${JSON.stringify(canonical)}, expected alias ${alias}`);
    const joinRules = await alice.getStateEvent(roomId, "m.room.join_rules", "");
    expect(joinRules.join_rule === "invite", `m.room.join_rules is ${JSON.stringify(joinRules)}`);
});

// Spec, GET /rooms/{roomId}/state/{eventType}/{stateKey}, 404: "The room has
// no state with the given type or key."
await check("GET state for a type the room has no state for answers 404 M_NOT_FOUND", async () => {
    await expectRefusal(alice.getStateEvent(roomId, "m.room.avatar", ""), "GET m.room.avatar", 404, "M_NOT_FOUND");
});

// Spec, GET /directory/room/{roomAlias}: 200 with room_id and servers (both required).
await check("GET /directory/room/{alias} resolves the alias to the room", async () => {
    const res = await bob.getRoomIdForAlias(alias);
    expect(res.room_id === roomId, `room_id ${res.room_id}, expected ${roomId}`);
    expect(Array.isArray(res.servers) && res.servers.length > 0, `servers is ${JSON.stringify(res.servers)}`);
    return `servers ${res.servers.join(",")}`;
});

await check("GET /joined_rooms lists the new room for its creator", async () => {
    const res = await alice.getJoinedRooms();
    expect(Array.isArray(res.joined_rooms) && res.joined_rooms.includes(roomId), `joined_rooms is ${JSON.stringify(res.joined_rooms)}`);
});

// Spec, GET /rooms/{roomId}/state/{eventType}/{stateKey}, 403: "You aren't a
// member of the room and weren't previously a member of the room."
await check("a non-member reading the room's state answers 403 M_FORBIDDEN", async () => {
    await expectRefusal(carol.getStateEvent(roomId, "m.room.name", ""), "carol GET state", 403, "M_FORBIDDEN");
});

// Spec, POST /join/{roomIdOrAlias}, 403: "You do not have permission to join
// the room"; the join rule is invite and carol has no invite. (The error code
// is the server's choice; see the banned join below.)
await check("an uninvited user joining the invite-only room answers 403", async () => {
    const err = await expectRefusal(carol.joinRoom(roomId), "carol POST /join", 403);
    return err.errcode;
});

await check("POST /rooms/{roomId}/invite invites bob", async () => {
    await alice.invite(roomId, bobId);
    const member = await alice.getStateEvent(roomId, "m.room.member", bobId);
    expect(member.membership === "invite", `bob's m.room.member is ${JSON.stringify(member)}`);
});

await check("bob joins by alias: POST /join/{roomAlias} returns the room ID", async () => {
    const room = await bob.joinRoom(alias);
    expect(room?.roomId === roomId, `joined ${room?.roomId}, expected ${roomId}`);
    const member = await alice.getStateEvent(roomId, "m.room.member", bobId);
    expect(member.membership === "join", `bob's m.room.member is ${JSON.stringify(member)}`);
});

// Joining a room one is already in is a join -> join membership change, which
// the authorization rules allow for the member themselves.
await check("bob joins again by room ID: POST /join/{roomId} returns the same room", async () => {
    const before = requestsTo("POST", `/join/${roomId}`);
    const room = await bob.joinRoom(roomId);
    expect(requestsTo("POST", `/join/${roomId}`) > before, `the SDK did not send the join to the server`);
    expect(room?.roomId === roomId, `joined ${room?.roomId}, expected ${roomId}`);
});

await check("GET /joined_rooms lists the room for bob", async () => {
    const res = await bob.getJoinedRooms();
    expect(Array.isArray(res.joined_rooms) && res.joined_rooms.includes(roomId), `joined_rooms is ${JSON.stringify(res.joined_rooms)}`);
});

await check("GET /rooms/{roomId}/joined_members lists alice and bob", async () => {
    const res = await alice.getJoinedRoomMembers(roomId);
    const ids = Object.keys(res.joined ?? {}).sort();
    expect(JSON.stringify(ids) === JSON.stringify([aliceId, bobId].sort()), `joined is ${JSON.stringify(res.joined)}`);
});

// -- messages

const txnId = `interop-${tag}-1`;
let aliceMessage;
await check("alice sends m.room.message with an explicit txnId", async () => {
    const res = await alice.sendMessage(roomId, { msgtype: "m.text", body: `hello from alice ${tag}` }, txnId);
    expect(isEventId(res.event_id), `event_id is ${JSON.stringify(res.event_id)}`);
    aliceMessage = res.event_id;
    return aliceMessage;
});

// Spec, "Transaction identifiers": a request repeated with the same
// transaction ID by the same device is the same transaction; PUT /send
// "will be used by the server to ensure idempotency of requests".
await check("a retried send with the same txnId returns the same event ID", async () => {
    const before = requestsTo("PUT", `/send/m.room.message/${txnId}`);
    const res = await alice.sendMessage(roomId, { msgtype: "m.text", body: `hello from alice ${tag}` }, txnId);
    expect(requestsTo("PUT", `/send/m.room.message/${txnId}`) > before, `the SDK did not send the retry to the server`);
    expect(res.event_id === aliceMessage, `event_id ${res.event_id}, expected ${aliceMessage}`);
});

// Spec, "Transaction identifiers": the scope of a transaction ID is a single
// device; bob's device reusing alice's txnId is a different transaction.
let bobMessage;
await check("bob sends with the same txnId from his own device and gets a different event", async () => {
    const res = await bob.sendMessage(roomId, { msgtype: "m.text", body: `hello from bob ${tag}` }, txnId);
    expect(isEventId(res.event_id) && res.event_id !== aliceMessage, `event_id ${res.event_id} (alice's is ${aliceMessage})`);
    bobMessage = res.event_id;
    return bobMessage;
});

let bobSecond;
await check("bob sends a second message", async () => {
    const res = await bob.sendEvent(roomId, "m.room.message", { msgtype: "m.text", body: `second from bob ${tag}` }, `interop-${tag}-2`);
    expect(isEventId(res.event_id) && res.event_id !== bobMessage, `event_id ${res.event_id}`);
    bobSecond = res.event_id;
});

// -- state

const newTopic = `second topic ${tag}`;
let topicEventId;
await check("alice sets the topic with PUT /rooms/{roomId}/state/m.room.topic/", async () => {
    const res = await alice.sendStateEvent(roomId, "m.room.topic", { topic: newTopic }, "");
    expect(isEventId(res.event_id), `event_id is ${JSON.stringify(res.event_id)}`);
    topicEventId = res.event_id;
    const content = await bob.getStateEvent(roomId, "m.room.topic", "");
    expect(content.topic === newTopic, `m.room.topic is now ${JSON.stringify(content)}`);
});

// Spec, GET /rooms/{roomId}/state: the current state, an array of ClientEvents
// (content, event_id, origin_server_ts, room_id, sender, type, state_key).
await check("GET /rooms/{roomId}/state returns the whole current state as client events", async () => {
    const events = await bob.roomState(roomId);
    expect(Array.isArray(events), `not an array: ${JSON.stringify(events).slice(0, 200)}`);
    for (const e of events) {
        const ok = isEventId(e.event_id) && e.room_id === roomId && isNonEmptyString(e.sender) && isNonEmptyString(e.type)
            && typeof e.state_key === "string" && typeof e.origin_server_ts === "number" && e.content && typeof e.content === "object";
        expect(ok, `malformed state event ${JSON.stringify(e)}`);
    }
    const find = (type, key = "") => events.find((e) => e.type === type && e.state_key === key);
    for (const type of ["m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.history_visibility", "m.room.name", "m.room.canonical_alias"]) {
        expect(find(type), `no ${type} in the state`);
    }
    const topic = find("m.room.topic");
    expect(topic?.event_id === topicEventId && topic.content.topic === newTopic && topic.sender === aliceId, `m.room.topic is ${JSON.stringify(topic)}`);
    expect(find("m.room.member", aliceId)?.content.membership === "join", `alice's membership is ${JSON.stringify(find("m.room.member", aliceId))}`);
    expect(find("m.room.member", bobId)?.content.membership === "join", `bob's membership is ${JSON.stringify(find("m.room.member", bobId))}`);
    return `${events.length} events`;
});

await check("GET /rooms/{roomId}/members returns both members' join events", async () => {
    const res = await bob.members(roomId);
    const chunk = res.chunk ?? [];
    const membership = (id) => chunk.find((e) => e.type === "m.room.member" && e.state_key === id)?.content?.membership;
    expect(membership(aliceId) === "join" && membership(bobId) === "join", `chunk is ${JSON.stringify(chunk).slice(0, 400)}`);
});

// Spec, PUT /rooms/{roomId}/state/{eventType}/{stateKey}, 403: "The sender
// doesn't have permission to send the event into the room." (Bob is at
// users_default 0; changing m.room.power_levels needs its state level and may
// never raise anyone above the sender's own level.)
await check("bob giving himself power with PUT state m.room.power_levels answers 403 M_FORBIDDEN", async () => {
    const levels = await bob.getStateEvent(roomId, "m.room.power_levels", "");
    const raised = { ...levels, users: { ...(levels.users ?? {}), [bobId]: 100 } };
    await expectRefusal(bob.sendStateEvent(roomId, "m.room.power_levels", raised, ""), "bob PUT m.room.power_levels", 403, "M_FORBIDDEN");
    const after = await alice.getStateEvent(roomId, "m.room.power_levels", "");
    expect((after.users ?? {})[bobId] !== 100, `the power levels changed anyway: ${JSON.stringify(after)}`);
});

// -- redaction

const redactTxn = `interop-${tag}-redact`;
let redactionId;
await check("alice redacts bob's message with PUT /rooms/{roomId}/redact/{eventId}/{txnId}", async () => {
    const res = await alice.redactEvent(roomId, bobSecond, redactTxn, { reason: "interop" });
    expect(isEventId(res.event_id) && res.event_id !== bobSecond, `event_id is ${JSON.stringify(res.event_id)}`);
    redactionId = res.event_id;
    return redactionId;
});

await check("a retried redaction with the same txnId returns the same event ID", async () => {
    const before = requestsTo("PUT", `/redact/${bobSecond}/${redactTxn}`);
    const res = await alice.redactEvent(roomId, bobSecond, redactTxn, { reason: "interop" });
    expect(requestsTo("PUT", `/redact/${bobSecond}/${redactTxn}`) > before, `the SDK did not send the retry to the server`);
    expect(res.event_id === redactionId, `event_id ${res.event_id}, expected ${redactionId}`);
});

// Spec, "Redactions": the server strips every content key the redaction
// algorithm does not keep (none, for a custom event type); a redacted state
// event stays in the current state with its stripped content.
await check("a redacted state event reads back with its content stripped", async () => {
    const type = "org.example.interop.note";
    const sent = await alice.sendStateEvent(roomId, type, { note: `to be redacted ${tag}` }, "");
    const before = await alice.getStateEvent(roomId, type, "");
    expect(before.note === `to be redacted ${tag}`, `before the redaction: ${JSON.stringify(before)}`);
    await alice.redactEvent(roomId, sent.event_id, `interop-${tag}-redact-state`);
    const after = await alice.getStateEvent(roomId, type, "");
    expect(Object.keys(after).length === 0, `after the redaction the content is ${JSON.stringify(after)}, expected {}`);
});

// -- aliases

const extraAlias = `#interop_extra_${tag}:${serverName}`;
await check("PUT /directory/room/{alias} adds a second alias, which resolves", async () => {
    await alice.createAlias(extraAlias, roomId);
    const res = await bob.getRoomIdForAlias(extraAlias);
    expect(res.room_id === roomId, `room_id ${res.room_id}, expected ${roomId}`);
});

// Spec, PUT /directory/room/{roomAlias}, 409: "A room alias with that name already exists."
await check("PUT /directory/room/{alias} for an alias in use answers 409", async () => {
    await expectRefusal(alice.createAlias(extraAlias, roomId), "PUT an existing alias", 409);
});

await check("GET /rooms/{roomId}/aliases lists both local aliases", async () => {
    const res = await bob.getLocalAliases(roomId);
    const aliases = res.aliases ?? [];
    expect(aliases.includes(alias) && aliases.includes(extraAlias), `aliases is ${JSON.stringify(res.aliases)}`);
});

// Spec, DELETE /directory/room/{roomAlias}: 200 {}; then GET answers 404 M_NOT_FOUND.
await check("DELETE /directory/room/{alias} removes both aliases; resolving them answers 404 M_NOT_FOUND", async () => {
    for (const a of [extraAlias, alias]) {
        await alice.deleteAlias(a);
        await expectRefusal(bob.getRoomIdForAlias(a), `GET ${a} after DELETE`, 404, "M_NOT_FOUND");
    }
    const res = await alice.getLocalAliases(roomId);
    expect((res.aliases ?? []).length === 0, `aliases after deleting is ${JSON.stringify(res.aliases)}`);
});

// -- a direct chat created with an invite list

// Spec, POST /createRoom: is_direct "makes the server set the is_direct flag
// on the m.room.member events sent to the users in invite".
let directId;
await check("POST /createRoom with invite and is_direct invites bob with is_direct set", async () => {
    const res = await alice.createRoom({ preset: "trusted_private_chat", is_direct: true, invite: [bobId] });
    expect(isRoomId(res.room_id), `room_id is ${JSON.stringify(res.room_id)}`);
    directId = res.room_id;
    const member = await alice.getStateEvent(directId, "m.room.member", bobId);
    expect(member.membership === "invite" && member.is_direct === true, `bob's m.room.member is ${JSON.stringify(member)}`);
});

// Spec, POST /rooms/{roomId}/leave: "If the user was invited to the room,
// but had not joined, this call serves to reject the invite."
await check("bob rejects the invite with POST /rooms/{roomId}/leave", async () => {
    await bob.leave(directId);
    const member = await alice.getStateEvent(directId, "m.room.member", bobId);
    expect(member.membership === "leave", `bob's m.room.member is ${JSON.stringify(member)}`);
});

// -- a public room in the directory

const lobbyName = `Interop lobby ${tag}`;
let lobbyId;
await check("POST /createRoom (public_chat, visibility public) returns a room ID", async () => {
    const res = await alice.createRoom({
        preset: "public_chat",
        visibility: "public",
        name: lobbyName,
        topic: `lobby ${tag}`,
        initial_state: [{ type: "org.example.interop.note", state_key: "", content: { note: `initial ${tag}` } }],
        power_level_content_override: { events: { "m.room.topic": 0 } },
    });
    expect(isRoomId(res.room_id) && res.room_id !== roomId, `room_id is ${JSON.stringify(res.room_id)}`);
    lobbyId = res.room_id;
    const joinRules = await alice.getStateEvent(lobbyId, "m.room.join_rules", "");
    expect(joinRules.join_rule === "public", `m.room.join_rules is ${JSON.stringify(joinRules)}`);
    return lobbyId;
});

// Spec, GET /publicRooms (no authentication required): chunk of
// PublishedRoomsChunk (room_id, num_joined_members, world_readable,
// guest_can_join required; name optional). createRoom's visibility defaults
// to private, which keeps the first room out of the directory.
await check("GET /publicRooms lists the public room (not the private one)", () => eventually(async () => {
    const res = await anon.publicRooms({ limit: 100 });
    const chunk = res.chunk ?? [];
    const lobby = chunk.find((r) => r.room_id === lobbyId);
    expect(lobby, `room ${lobbyId} not in ${JSON.stringify(chunk).slice(0, 400)}`);
    expect(lobby.name === lobbyName, `name is ${JSON.stringify(lobby.name)}`);
    expect(lobby.num_joined_members === 1, `num_joined_members is ${lobby.num_joined_members}, expected 1`);
    expect(lobby.world_readable === false && lobby.guest_can_join === false, `entry is ${JSON.stringify(lobby)}`);
    expect(!chunk.some((r) => r.room_id === roomId), `the private room is listed too`);
    return `${chunk.length} rooms listed`;
}));

await check("POST /publicRooms with a generic_search_term filter finds just that room", () => eventually(async () => {
    const res = await bob.publicRooms({ limit: 10, filter: { generic_search_term: `lobby ${tag}` } });
    const ids = (res.chunk ?? []).map((r) => r.room_id);
    expect(JSON.stringify(ids) === JSON.stringify([lobbyId]), `chunk is ${JSON.stringify(res.chunk)}`);
}));

// Spec, POST /createRoom: initial_state events are sent into the room, and
// power_level_content_override is merged into the default m.room.power_levels.
await check("createRoom's initial_state and power_level_content_override took effect", async () => {
    const note = await alice.getStateEvent(lobbyId, "org.example.interop.note", "");
    expect(note.note === `initial ${tag}`, `org.example.interop.note is ${JSON.stringify(note)}`);
    const levels = await alice.getStateEvent(lobbyId, "m.room.power_levels", "");
    expect(levels.events?.["m.room.topic"] === 0, `m.room.power_levels is ${JSON.stringify(levels)}`);
});

// -- kick, ban and unban (in the public room)

await check("bob and carol join the public room by ID without an invite", async () => {
    expect((await bob.joinRoom(lobbyId))?.roomId === lobbyId, `bob's join returned another room`);
    expect((await carol.joinRoom(lobbyId))?.roomId === lobbyId, `carol's join returned another room`);
    const res = await alice.getJoinedRoomMembers(lobbyId);
    const ids = Object.keys(res.joined ?? {}).sort();
    expect(JSON.stringify(ids) === JSON.stringify([aliceId, bobId, carolId].sort()), `joined is ${JSON.stringify(res.joined)}`);
});

// The override above lowered m.room.topic to 0, bob's level.
await check("bob may set the public room's topic, which the override opened to everyone", async () => {
    const res = await bob.sendStateEvent(lobbyId, "m.room.topic", { topic: `bob's lobby ${tag}` }, "");
    expect(isEventId(res.event_id), `event_id is ${JSON.stringify(res.event_id)}`);
    const topic = await carol.getStateEvent(lobbyId, "m.room.topic", "");
    expect(topic.topic === `bob's lobby ${tag}`, `m.room.topic is ${JSON.stringify(topic)}`);
});

// Spec, POST /rooms/{roomId}/kick, 403: "You do not have permission to kick
// the user from the room." (public_chat: kick level 50, bob at 0.)
await check("bob kicking carol answers 403 M_FORBIDDEN", async () => {
    await expectRefusal(bob.kick(lobbyId, carolId, "no"), "bob kicks carol", 403, "M_FORBIDDEN");
});

// Spec, POST /rooms/{roomId}/kick: the reason "will be supplied as the
// reason on the target's updated m.room.member event".
await check("alice kicks carol: her membership becomes leave with the reason", async () => {
    await alice.kick(lobbyId, carolId, "interop kick");
    const member = await alice.getStateEvent(lobbyId, "m.room.member", carolId);
    expect(member.membership === "leave" && member.reason === "interop kick", `carol's m.room.member is ${JSON.stringify(member)}`);
});

await check("carol can rejoin the public room after a kick", async () => {
    expect((await carol.joinRoom(lobbyId))?.roomId === lobbyId, `carol's join returned another room`);
});

await check("alice bans carol: her membership becomes ban", async () => {
    await alice.ban(lobbyId, carolId, "interop ban");
    const member = await alice.getStateEvent(lobbyId, "m.room.member", carolId);
    expect(member.membership === "ban" && member.reason === "interop ban", `carol's m.room.member is ${JSON.stringify(member)}`);
});

// Spec, POST /join/{roomIdOrAlias}, 403: "You do not have permission to join
// the room. A meaningful error code and description error text will be
// returned. Example reasons for rejection are: ... the user is banned from the
// room." The error code is the server's choice (Synapse says M_BAD_STATE), so
// only the status is checked.
await check("banned carol joining answers 403", async () => {
    const err = await expectRefusal(carol.joinRoom(lobbyId), "banned carol joins", 403);
    return err.errcode;
});

await check("alice unbans carol: her membership becomes leave", async () => {
    await alice.unban(lobbyId, carolId);
    const member = await alice.getStateEvent(lobbyId, "m.room.member", carolId);
    expect(member.membership === "leave", `carol's m.room.member is ${JSON.stringify(member)}`);
});

await check("unbanned carol can join again", async () => {
    expect((await carol.joinRoom(lobbyId))?.roomId === lobbyId, `carol's join returned another room`);
    const res = await alice.getJoinedRoomMembers(lobbyId);
    expect(Object.hasOwn(res.joined ?? {}, carolId), `joined is ${JSON.stringify(res.joined)}`);
});

// -- bob leaves the private room

await check("bob leaves the private room with POST /rooms/{roomId}/leave", async () => {
    await bob.leave(roomId);
    const member = await alice.getStateEvent(roomId, "m.room.member", bobId);
    expect(member.membership === "leave", `bob's m.room.member is ${JSON.stringify(member)}`);
});

await check("alice's GET /joined_members no longer lists bob", async () => {
    const res = await alice.getJoinedRoomMembers(roomId);
    const ids = Object.keys(res.joined ?? {});
    expect(JSON.stringify(ids) === JSON.stringify([aliceId]), `joined is ${JSON.stringify(res.joined)}`);
});

await check("bob's GET /joined_rooms drops the private room and keeps the public one", async () => {
    const res = await bob.getJoinedRooms();
    const rooms = res.joined_rooms ?? [];
    expect(!rooms.includes(roomId) && rooms.includes(lobbyId), `joined_rooms is ${JSON.stringify(res.joined_rooms)}`);
});

await check("bob forgets the room he left with POST /rooms/{roomId}/forget", async () => {
    await bob.forget(roomId);
});


// ---- the SDK's own sync loop ----------------------------------------------
//
// Alice and bob now run the client as an application does: startClient()
// with the SDK's in-memory store, so everything they learn about rooms comes
// through the SDK's own /sync loop (initial sync, then long-polling
// incremental syncs), and its own local-echo and pagination machinery.
// Nothing here sleeps for a fixed time: each wait listens to the SDK's
// events (sync state, Room, RoomMember.membership, Room.timeline,
// Room.localEchoUpdated) and gives up after SYNC_WAIT_MS.
//
// A sync loop that reports ERROR or RECONNECTING (the SDK retries a failed
// start-up request such as GET /pushrules/ forever) fails the waiting check
// at once with the SDK's error and the failed requests.


collectSyncPhaseFailures();
const INITIAL_SYNC_LIMIT = 10;
const aliceLoop = await startSyncLoop("alice", registered, { initialSyncLimit: INITIAL_SYNC_LIMIT });
const bobLoop = await startSyncLoop("bob", bobReg, { initialSyncLimit: INITIAL_SYNC_LIMIT });
const aliceSync = aliceLoop.client;
const bobSync = bobLoop.client;

// Spec, GET /sync: without since, "the server will return the full state of
// each room" plus the most recent timeline events, up to the filter's
// timeline limit.
await check(`alice's and bob's SDK sync loops start (startClient, initialSyncLimit ${INITIAL_SYNC_LIMIT}) and reach PREPARED`, async () => {
    await when("both sync loops are PREPARED", [], () => isReady(aliceLoop) && isReady(bobLoop));
    const initial = aliceLoop.rawSyncs[0];
    expect(initial && typeof initial.next_batch === "string", `the first /sync response has no next_batch: ${JSON.stringify(initial).slice(0, 300)}`);
    return `alice: ${aliceLoop.states.join(" > ")}; bob: ${bobLoop.states.join(" > ")}`;
});

await check("the initial sync gives alice the public room with its name, state and a limited timeline", async () => {
    const room = aliceSync.getRoom(lobbyId);
    expect(room, `alice's client has no room ${lobbyId}; rooms: ${JSON.stringify(aliceSync.getRooms().map((r) => r.roomId))}`);
    expect(room.getMyMembership() === "join", `alice's membership is ${room.getMyMembership()}`);
    expect(room.name === lobbyName, `the SDK names the room ${JSON.stringify(room.name)}, expected ${JSON.stringify(lobbyName)}`);
    const joined = room.getJoinedMembers().map((m) => m.userId).sort();
    expect(JSON.stringify(joined) === JSON.stringify([aliceId, bobId, carolId].sort()), `joined members are ${JSON.stringify(joined)}`);
    const events = room.getLiveTimeline().getEvents();
    expect(events.length > 0 && events.length <= INITIAL_SYNC_LIMIT, `the live timeline holds ${events.length} events, expected 1..${INITIAL_SYNC_LIMIT}`);
    return `${events.length} timeline events`;
});

// -- a room created while both loops run

const syncRoomName = `Interop sync room ${tag}`;
let syncRoomId;
const bobSees = recordLiveMessages(bobLoop, () => syncRoomId);
const aliceSees = recordLiveMessages(aliceLoop, () => syncRoomId);

await check("alice creates a room; her sync loop brings it in (Room event, membership join, name)", async () => {
    const roomEvents = [];
    const onRoom = (room) => roomEvents.push(room.roomId);
    aliceSync.on(ClientEvent.Room, onRoom);
    try {
        const res = await aliceSync.createRoom({ preset: "private_chat", name: syncRoomName });
        expect(isRoomId(res.room_id), `room_id is ${JSON.stringify(res.room_id)}`);
        syncRoomId = res.room_id;
        await when("alice's client has the room, joined, with its name",
            [[aliceSync, ClientEvent.Room], [aliceSync, RoomEvent.MyMembership], [aliceSync, RoomEvent.Name]],
            () => {
                const room = aliceSync.getRoom(syncRoomId);
                return room?.getMyMembership() === "join" && room.name === syncRoomName;
            });
        expect(roomEvents.includes(syncRoomId), `no "Room" event for ${syncRoomId}`);
    } finally {
        aliceSync.off(ClientEvent.Room, onRoom);
    }
    return syncRoomId;
});

// Spec, GET /sync: rooms.invite holds "the rooms that the user has been
// invited to", with invite_state including the m.room.member invite event.
await check("alice invites bob; bob's sync loop shows the invite (RoomMember.membership invite, sender alice)", async () => {
    const seen = [];
    const onMembership = (event, member) => {
        if (member.roomId === syncRoomId && member.userId === bobId) seen.push({ membership: member.membership, sender: event?.getSender() });
    };
    bobSync.on(RoomMemberEvent.Membership, onMembership);
    try {
        await aliceSync.invite(syncRoomId, bobId);
        // The SDK fires RoomMember.membership while it builds the room, and
        // the Room event once the room is in its store.
        const invite = await when("bob's client sees his invite", [[bobSync, RoomMemberEvent.Membership], [bobSync, ClientEvent.Room]],
            () => bobSync.getRoom(syncRoomId) && seen.find((s) => s.membership === "invite"));
        expect(invite.sender === aliceId, `the invite's sender is ${invite.sender}, expected ${aliceId}`);
        const room = bobSync.getRoom(syncRoomId);
        expect(room.getMyMembership() === "invite", `bob's membership in his client is ${room.getMyMembership()}`);
        return `room named ${JSON.stringify(room.name)} in the invite`;
    } finally {
        bobSync.off(RoomMemberEvent.Membership, onMembership);
    }
});

await check("bob joins; his loop moves the room to join and alice's loop sees his membership become join", async () => {
    await bobSync.joinRoom(syncRoomId);
    await when("bob's client shows him joined", [[bobSync, RoomEvent.MyMembership]],
        () => bobSync.getRoom(syncRoomId)?.getMyMembership() === "join");
    await when("alice's client shows bob joined", [[aliceSync, RoomMemberEvent.Membership]],
        () => aliceSync.getRoom(syncRoomId)?.getMember(bobId)?.membership === "join");
    const room = bobSync.getRoom(syncRoomId);
    expect(room.name === syncRoomName, `bob's client names the room ${JSON.stringify(room.name)}`);
    const joined = room.getJoinedMembers().map((m) => m.userId).sort();
    expect(JSON.stringify(joined) === JSON.stringify([aliceId, bobId].sort()), `bob's client lists joined members ${JSON.stringify(joined)}`);
});

// -- messages through the sync loop

const aliceSent = []; // { id, body } in the order the server accepted them
const bodyOf = (i) => `sync message ${i} from alice ${tag}`;

// Spec, GET /sync with since and timeout: the server holds the request
// "until an event arrives" (long-poll), so each message should arrive well
// before the SDK's 30 s poll timeout.
await check("alice sends 3 messages one by one; bob's loop delivers each as a live Room.timeline event", async () => {
    const latencies = [];
    for (let i = 1; i <= 3; i++) {
        const body = bodyOf(i);
        const start = Date.now();
        const res = await aliceSync.sendMessage(syncRoomId, { msgtype: "m.text", body });
        expect(isEventId(res.event_id), `send ${i}: event_id is ${JSON.stringify(res.event_id)}`);
        aliceSent.push({ id: res.event_id, body });
        const got = await when(`bob's client receives message ${i} (${res.event_id})`, [[bobSync, RoomEvent.Timeline]],
            () => bobSees.find((e) => e.id === res.event_id));
        expect(got.live, `message ${i} was not flagged as a live event`);
        expect(got.body === body && got.sender === aliceId, `message ${i} arrived as ${JSON.stringify(got)}`);
        latencies.push(got.at - start);
    }
    return `send-to-delivery ${latencies.join(", ")} ms`;
});

await check("alice sends a burst of 4 messages; bob's loop delivers all of them", async () => {
    const bodies = [4, 5, 6, 7].map(bodyOf);
    // The SDK queues m.room.message sends of one room and sends them in order.
    const results = await Promise.all(bodies.map((body) => aliceSync.sendMessage(syncRoomId, { msgtype: "m.text", body })));
    results.forEach((res, i) => aliceSent.push({ id: res.event_id, body: bodies[i] }));
    await when("bob's client has received all 7 messages", [[bobSync, RoomEvent.Timeline]],
        () => aliceSent.every((m) => bobSees.some((e) => e.id === m.id)));
});

await check("bob's loop got alice's 7 messages once each, in send order, with the right bodies", async () => {
    const fromAlice = bobSees.filter((e) => e.sender === aliceId);
    const got = fromAlice.map((e) => `${e.id} ${e.body}`);
    const want = aliceSent.map((m) => `${m.id} ${m.body}`);
    expect(JSON.stringify(got) === JSON.stringify(want), `bob's client saw ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
    const inTimeline = bobSync.getRoom(syncRoomId).getLiveTimeline().getEvents().map((e) => e.getId());
    for (const m of aliceSent) {
        const n = inTimeline.filter((id) => id === m.id).length;
        expect(n === 1, `${m.id} is ${n} times in bob's live timeline`);
    }
});

// Spec, ClientEvent unsigned.transaction_id: "The client-supplied transaction
// ID, for example, provided via PUT /_matrix/client/v3/rooms/{roomId}/send/
// {eventType}/{txnId}, if the client being given the event is the same one
// which sent it." The SDK uses it to match its local echo with the copy that
// comes down /sync (it can fall back to the event ID, so the raw response is
// checked too).
const echoTxnId = `interop-${tag}-echo`;
const echoBody = `local echo test ${tag}`;
let echoEventId;
await check("alice's local echo is resolved by her sync loop: local ID replaced by the server's, txnId matched", async () => {
    let localEcho = null;
    let localId = null;
    const onTimeline = (event, room) => {
        if (room?.roomId === syncRoomId && event.getTxnId() === echoTxnId && !localEcho) {
            localEcho = event;
            localId = event.getId();
        }
    };
    aliceSync.on(RoomEvent.Timeline, onTimeline);
    let res;
    try {
        res = await aliceSync.sendMessage(syncRoomId, { msgtype: "m.text", body: echoBody }, echoTxnId);
    } finally {
        aliceSync.off(RoomEvent.Timeline, onTimeline);
    }
    echoEventId = res.event_id;
    expect(localEcho, `the SDK put no local echo with txnId ${echoTxnId} in alice's timeline`);
    expect(localId !== echoEventId, `the local echo already had the server's ID ${localId}`);
    expect(requestsTo("PUT", `/send/m.room.message/${echoTxnId}`) === 1, `the SDK did not PUT /send/m.room.message/${echoTxnId} once`);
    await when("the remote echo of alice's message replaces her local echo", [[aliceSync, RoomEvent.LocalEchoUpdated]],
        () => localEcho.status === null && localEcho.getId() === echoEventId);
    const timeline = aliceSync.getRoom(syncRoomId).getLiveTimeline().getEvents();
    const copies = timeline.filter((e) => e.getId() === echoEventId || e.getTxnId() === echoTxnId);
    expect(copies.length === 1 && copies[0] === localEcho, `alice's live timeline holds ${copies.length} copies of the message`);
    expect(!timeline.some((e) => e.getId()?.startsWith("~")), `a local ID is still in alice's timeline`);
    const raw = rawTimeline(aliceLoop, syncRoomId).find((e) => e.event_id === echoEventId);
    expect(raw, `no alice /sync response carried ${echoEventId}`);
    expect(raw.unsigned?.transaction_id === echoTxnId,
        `alice's /sync copy of ${echoEventId} has unsigned ${JSON.stringify(raw.unsigned)}, expected transaction_id ${echoTxnId}`);
    return `${localId} -> ${echoEventId}`;
});

await check("bob's copy of that message has no transaction_id (it is alice's)", async () => {
    await when("bob's client receives the message", [[bobSync, RoomEvent.Timeline]], () => bobSees.some((e) => e.id === echoEventId));
    const raw = rawTimeline(bobLoop, syncRoomId).find((e) => e.event_id === echoEventId);
    expect(raw, `no bob /sync response carried ${echoEventId}`);
    expect(raw.unsigned?.transaction_id === undefined, `bob's copy has unsigned ${JSON.stringify(raw.unsigned)}`);
    expect(raw.content?.body === echoBody, `bob's copy has content ${JSON.stringify(raw.content)}`);
});

let bobSyncMessage;
await check("bob sends a message; alice's loop delivers it as a live Room.timeline event", async () => {
    const body = `sync reply from bob ${tag}`;
    const start = Date.now();
    const res = await bobSync.sendMessage(syncRoomId, { msgtype: "m.text", body });
    bobSyncMessage = res.event_id;
    const got = await when(`alice's client receives bob's message ${res.event_id}`, [[aliceSync, RoomEvent.Timeline]],
        () => aliceSees.find((e) => e.id === res.event_id));
    expect(got.live && got.sender === bobId && got.body === body, `it arrived as ${JSON.stringify(got)}`);
    return `${got.at - start} ms`;
});

// -- history through pagination

// The events every complete view of the room must hold, in this order.
const milestones = () => [
    ["m.room.create", (e) => e.getType() === "m.room.create"],
    ["alice's join", (e) => e.getType() === "m.room.member" && e.getStateKey() === aliceId && e.getContent().membership === "join"],
    ["m.room.name", (e) => e.getType() === "m.room.name" && e.getContent().name === syncRoomName],
    ["bob's invite", (e) => e.getType() === "m.room.member" && e.getStateKey() === bobId && e.getContent().membership === "invite"],
    ["bob's join", (e) => e.getType() === "m.room.member" && e.getStateKey() === bobId && e.getContent().membership === "join"],
    ...aliceSent.map((m, i) => [`message ${i + 1}`, (e) => e.getId() === m.id && e.getContent().body === m.body]),
    ["the local-echo message", (e) => e.getId() === echoEventId],
    ["bob's message", (e) => e.getId() === bobSyncMessage],
];

// Pages LOOP's live timeline of the sync room back (LIMIT events a request)
// until m.room.create is in it or the server says there is no more; checks
// the result against the milestones. Returns [events, requests made].
async function paginateToCreation(loop, limit) {
    const room = loop.client.getRoom(syncRoomId);
    const timeline = room.getLiveTimeline();
    const before = requestsTo("GET", `/rooms/${syncRoomId}/messages`);
    for (let page = 0; page < 40 && !timeline.getEvents().some((e) => e.getType() === "m.room.create"); page++) {
        const more = await loop.client.paginateEventTimeline(timeline, { backwards: true, limit });
        if (!more) break;
    }
    const events = timeline.getEvents();
    const ids = events.map((e) => e.getId());
    expect(new Set(ids).size === ids.length, `the timeline holds duplicates: ${JSON.stringify(ids)}`);
    expect(events[0]?.getType() === "m.room.create", `the timeline starts with ${events[0]?.getType()} ${events[0]?.getId()}, not m.room.create (${events.length} events)`);
    let at = -1;
    for (const [name, matches] of milestones()) {
        const i = events.findIndex(matches);
        expect(i >= 0, `${name} is not in the timeline: ${JSON.stringify(events.map((e) => `${e.getType()} ${e.getId()}`))}`);
        expect(i > at, `${name} comes before an earlier event in the timeline`);
        at = i;
    }
    return [events, requestsTo("GET", `/rooms/${syncRoomId}/messages`) - before];
}

// Spec, GET /rooms/{roomId}/messages: pages back from a timeline's prev_batch
// (the from token); "If no further events are available (either because we
// have reached the start of the timeline, or because the user does not have
// permission to see any more events), this property [end] is omitted".
// private_chat gives history_visibility shared, so bob may see it all.
let bobTimelineIds;
await check("bob's live timeline, paged back as far as needed, reaches the room's creation with every event once and in order", async () => {
    const [events, requests] = await paginateToCreation(bobLoop, 3);
    bobTimelineIds = events.map((e) => e.getId());
    return `${events.length} events, ${requests} /messages requests`;
});

// A second client of bob's (fresh in-memory store, same device) with a short
// initial sync and lazy-loaded members: its timeline starts in the middle, so
// it must go through /messages to reach the start.
//
// Spec, "Lazy-loading room members": "if a client makes a /sync request with
// lazy-loading enabled, the server will only return membership events for the
// sender of events in the timeline, not all members of a room."
const LAZY_SYNC_LIMIT = 3;
let bobLazyLoop;
await check(`a second client of bob's (initialSyncLimit ${LAZY_SYNC_LIMIT}, lazyLoadMembers) gets a limited timeline with the senders' members`, async () => {
    bobLazyLoop = await startSyncLoop("bob-lazy", bobReg, { initialSyncLimit: LAZY_SYNC_LIMIT, lazyLoadMembers: true });
    await when("bob's second sync loop is PREPARED", [], () => isReady(bobLazyLoop));
    const raw = bobLazyLoop.rawSyncs[0]?.rooms?.join?.[syncRoomId];
    expect(raw, `the initial sync has no joined room ${syncRoomId}`);
    const tl = raw.timeline ?? {};
    expect(Array.isArray(tl.events) && tl.events.length === LAZY_SYNC_LIMIT, `timeline has ${tl.events?.length} events, expected ${LAZY_SYNC_LIMIT}`);
    expect(tl.limited === true && isNonEmptyString(tl.prev_batch), `timeline limited=${tl.limited} prev_batch=${JSON.stringify(tl.prev_batch)}`);
    expect(tl.events.at(-1)?.event_id === bobSyncMessage, `the last timeline event is ${tl.events.at(-1)?.event_id}, expected bob's ${bobSyncMessage}`);
    const room = bobLazyLoop.client.getRoom(syncRoomId);
    for (const id of [aliceId, bobId]) {
        expect(room.getMember(id)?.membership === "join", `${id}'s membership is not known to the lazy client`);
    }
    return `${tl.events.length} events, limited`;
});

await check("the second client paginates back through /messages to the creation: the same events as bob's first client", async () => {
    const [events, requests] = await paginateToCreation(bobLazyLoop, 4);
    expect(requests > 0, `no /messages request was needed, so nothing was paginated`);
    const ids = events.map((e) => e.getId());
    expect(JSON.stringify(ids) === JSON.stringify(bobTimelineIds),
        `the events differ:\n      second client ${JSON.stringify(ids)}\n      first client  ${JSON.stringify(bobTimelineIds)}`);
    return `${events.length} events, ${requests} /messages requests`;
});

// Spec, GET /sync, RoomSummary m.joined_member_count: "The number of users
// with membership of join, including the client's own user ID. If this field
// has not changed since the last sync, it may be omitted. Required
// otherwise." An initial sync has no last sync.
await check("the second client's initial sync carries the room summary's m.joined_member_count", async () => {
    const response = bobLazyLoop.rawSyncs[0];
    const raw = response.rooms.join[syncRoomId];
    expect(raw.summary?.["m.joined_member_count"] === 2,
        `summary is ${JSON.stringify(raw.summary)}, expected m.joined_member_count 2; request: ${response.request}`);
});

// Spec, "Lazy-loading room members": the server "MAY assume that clients
// will remember membership events they have already been sent", and must
// send the membership of each sender in the timeline the client lacks; GET
// /sync: `state` holds "updates to the state, between the time indicated by
// the since parameter, and the start of the timeline". So after a gap in
// which carol joins and takes a room display name, the lazy client knows
// her by that name, and still knows the members it was sent before.
const carolRoomName = `Carol ${tag}`;
const GAP_FILLERS = 25;
let carolGapMessage;
await check(`carol joins and takes a display name while bob's lazy client is away; after the gap (limited timeline) it shows her name and still knows alice's`, async () => {
    const releaseSyncs = await holdSyncs(bobLazyLoop, () => aliceSync.sendTextMessage(syncRoomId, "opening the gap"));
    const heldFrom = bobLazyLoop.rawSyncs.length;
    try {
        await alice.invite(syncRoomId, carolId);
        await carol.joinRoom(syncRoomId);
        await carol.sendStateEvent(syncRoomId, "m.room.member", { membership: "join", displayname: carolRoomName }, carolId);
        // More than the timeline limit of the SDK's stored filter, which
        // sets none (servers default to 10), so the next sync is limited.
        for (let i = 0; i < GAP_FILLERS; i++) await alice.sendTextMessage(syncRoomId, `gap filler ${i}`);
        carolGapMessage = (await carol.sendTextMessage(syncRoomId, "carol after the gap")).event_id;
    } finally {
        releaseSyncs();
    }
    const lazySync = bobLazyLoop.client;
    await when("bob's lazy client has carol's message", [[lazySync, RoomEvent.Timeline]],
        () => lazySync.getRoom(syncRoomId)?.getLiveTimeline().getEvents().some((e) => e.getId() === carolGapMessage));
    const gapSync = bobLazyLoop.rawSyncs.slice(heldFrom).find((r) => r.rooms?.join?.[syncRoomId]?.timeline?.events?.some((e) => e.event_id === carolGapMessage));
    const raw = gapSync.rooms.join[syncRoomId];
    expect(raw.timeline.limited === true, `the sync after the gap has limited=${raw.timeline.limited}; request: ${gapSync.request}`);
    const carolState = raw.state.events.find((e) => e.type === "m.room.member" && e.state_key === carolId);
    expect(carolState?.content?.displayname === carolRoomName, `the sync's state has carol's membership ${JSON.stringify(carolState?.content)}, expected the display name ${carolRoomName}`);
    const room = lazySync.getRoom(syncRoomId);
    const message = room.getLiveTimeline().getEvents().find((e) => e.getId() === carolGapMessage);
    expect(message.sender?.name === carolRoomName, `the client shows carol's message from ${JSON.stringify(message.sender?.name)}, expected ${carolRoomName}`);
    for (const id of [aliceId, bobId]) {
        const member = await alice.getStateEvent(syncRoomId, "m.room.member", id);
        const expected = member.displayname ?? id;
        expect(room.getMember(id)?.rawDisplayName === expected, `the client names ${id} ${JSON.stringify(room.getMember(id)?.rawDisplayName)}, expected ${JSON.stringify(expected)}`);
    }
    expect(room.getJoinedMemberCount() === 3, `the client counts ${room.getJoinedMemberCount()} joined members, expected 3`);
    const sentMembers = raw.state.events.filter((e) => e.type === "m.room.member").map((e) => e.state_key);
    return `state after the gap: ${raw.state.events.length} events, members ${JSON.stringify(sentMembers)}`;
});

// Spec, GET /rooms/{roomId}/members: the full member list, which a lazy
// client loads when it needs it.
await check("bob's lazy client loads the member list: alice, bob and carol, with their names", async () => {
    const room = bobLazyLoop.client.getRoom(syncRoomId);
    await room.loadMembersIfNeeded();
    const joined = room.getJoinedMembers().map((m) => m.userId).sort();
    expect(JSON.stringify(joined) === JSON.stringify([aliceId, bobId, carolId].sort()), `joined members are ${JSON.stringify(joined)}`);
    expect(room.getMember(carolId)?.name === carolRoomName, `carol is named ${JSON.stringify(room.getMember(carolId)?.name)}`);
    return joined.map((id) => room.getMember(id).name).join(", ");
});

await check("the sync loops stop cleanly (stopClient)", async () => {
    for (const loop of [bobLazyLoop, bobLoop, aliceLoop]) {
        expect(!loop.trouble, loop.trouble);
        stopSyncLoop(loop);
    }
});

finish();
