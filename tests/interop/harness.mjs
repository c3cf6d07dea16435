// Shared machinery of the interop tests: argument and environment handling,
// the SDK's logger, an HTTP trace printed when a check fails, the check
// runner, account registration, and the SDK's own sync loop with event-driven
// waits (no fixed sleeps).
//
// Every script takes the homeserver URL as its only argument; see smoke.mjs.

import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { ClientEvent, createClient, MatrixError, MemoryStore, RoomEvent, SyncState } from "matrix-js-sdk";
// The SDK's module-wide logger, which some parts (the event send scheduler)
// use instead of the client's own.
import { logger as sdkModuleLogger } from "matrix-js-sdk/lib/logger.js";

export const baseUrl = process.argv[2];
if (!baseUrl) {
    console.error(`usage: node ${process.argv[1]} HOMESERVER_URL`);
    process.exit(2);
}
export const expectedServerName = process.env.MYELIN_INTEROP_SERVER_NAME || null;
export const REQUEST_TIMEOUT_MS = 15_000;

// The SDK's own log goes to stderr from MYELIN_INTEROP_SDK_LOG's level up
// (default warn; "debug" shows every request). One message is dropped: the
// SDK logs "Unable to refresh token" as an error whenever a request meets
// M_UNKNOWN_TOKEN, which here is a check's expected outcome.
export const LEVELS = ["trace", "debug", "info", "warn", "error"];
export const threshold = Math.max(0, LEVELS.indexOf(process.env.MYELIN_INTEROP_SDK_LOG ?? "warn"));
export function sdkLogger(prefix) {
    const log = Object.fromEntries(
        LEVELS.map((level, i) => [
            level,
            (...msg) => {
                if (i < threshold || String(msg[0]).startsWith("Unable to refresh token")) return;
                console.error(`sdk ${level}${prefix}:`, ...msg);
            },
        ]),
    );
    log.getChild = (namespace) => sdkLogger(`${prefix} ${namespace}`);
    return log;
}
export const quietLogger = sdkLogger("");
sdkModuleLogger.setLevel(threshold, false);

// ---- HTTP trace: the last exchanges, printed when a check fails. ----------

export const trace = [];
export const TRACE_KEEP = 10;
// Failed exchanges (HTTP >= 400 or no answer) of the sync-loop phase, where
// the SDK makes requests of its own and a failure may not surface as an
// exception in the test.
export const syncPhaseFailures = [];
let collectFailures = false;
// Every request's method and path, to tell what the SDK really sent.
export const sentRequests = [];
// Every answered exchange (who, method, path, status), and an emitter of
// "answered" for each new one: something to wait on for requests the SDK
// makes by itself, such as its key uploads.
export const answeredExchanges = [];
export const exchanges = new EventEmitter();
export const SECRET_KEYS = new Set(["password", "access_token", "refresh_token"]);

export function redact(text) {
    try {
        return JSON.stringify(JSON.parse(text), (k, v) => (SECRET_KEYS.has(k) ? "<redacted>" : v));
    } catch {
        return text.replace(/\s+/g, " ").trim();
    }
}

// A fetch for the SDK that records each request and response (secrets
// redacted) without changing them.
// WHO, if given, names the client in the printed trace.
export async function tracingFetch(input, init = {}, who = null) {
    const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
    const entry = {
        who,
        method: init.method ?? "GET",
        path: url.pathname + url.search,
        request: typeof init.body === "string" ? redact(init.body) : init.body ? "<binary>" : "",
        status: null,
        response: "",
    };
    trace.push(entry);
    if (trace.length > TRACE_KEEP) trace.shift();
    sentRequests.push(`${entry.method} ${decodeURIComponent(url.pathname)}`);
    try {
        const res = await fetch(input, init);
        entry.status = res.status;
        answeredExchanges.push({ who, method: entry.method, path: url.pathname, status: res.status });
        exchanges.emit("answered");
        entry.response = redact(await res.clone().text());
        if (collectFailures && res.status >= 400) syncPhaseFailures.push(entry);
        return res;
    } catch (err) {
        // A sync loop stopped by the test aborts its long-poll: not a failure.
        entry.status = err?.name === "AbortError" ? "aborted by the client" : `network error: ${err.cause?.message ?? err.message}`;
        if (collectFailures && err?.name !== "AbortError") syncPhaseFailures.push(entry);
        throw err;
    }
}

export const formatExchange = (e) =>
    `    ${e.who ? `[${e.who}] ` : ""}${e.method} ${e.path}${e.request ? ` body=${e.request.slice(0, 500)}` : ""}\n` +
    `      -> ${e.status ?? "no answer"}${e.response ? ` ${e.response.slice(0, 500)}` : ""}`;

export function printTrace() {
    if (syncPhaseFailures.length > 0) {
        console.log("  failed HTTP exchanges since the sync loops started (oldest first, at most 8):");
        for (const e of syncPhaseFailures.slice(0, 8)) console.log(formatExchange(e));
    }
    console.log("  last HTTP exchanges (oldest first):");
    for (const e of trace) console.log(formatExchange(e));
}

// ---- checks ---------------------------------------------------------------

let passed = 0;
let failed = 0;

class CheckFailed extends Error {}

export function expect(condition, message) {
    if (!condition) throw new CheckFailed(message);
}

export function describe(err) {
    if (err instanceof CheckFailed) return err.message;
    if (err instanceof MatrixError) {
        return `unexpected Matrix error: HTTP ${err.httpStatus} ${err.errcode ?? "(no errcode)"}: ${err.data?.error ?? err.message}`;
    }
    // Network errors nest their reason (ECONNREFUSED, ...) in a chain of causes.
    const messages = [];
    for (let e = err; e && messages.length < 5; e = e.cause) {
        const m = e.code && !String(e.message).includes(e.code) ? `${e.message} (${e.code})` : String(e.message ?? e);
        if (!messages.includes(m)) messages.push(m);
    }
    return `unexpected ${err?.name ?? "error"}: ${messages.join(": ")}`;
}

export function finish() {
    console.log(`${passed} passed, ${failed} failed`);
    process.exit(failed === 0 ? 0 : 1);
}

// Runs one check; its return value (if any) is shown after the name. Stops
// the run on failure.
export async function check(name, fn) {
    let detail;
    try {
        detail = await fn();
    } catch (err) {
        failed += 1;
        console.log(`FAIL - ${name}: ${describe(err)}`);
        printTrace();
        finish();
    }
    passed += 1;
    console.log(`ok - ${name}${detail ? ` (${detail})` : ""}`);
}

// Awaits a call that must fail with a Matrix error; returns the error.
export async function expectMatrixError(promise, what) {
    try {
        const body = await promise;
        throw new CheckFailed(`${what} succeeded, expected an error; got ${JSON.stringify(body)}`);
    } catch (err) {
        if (err instanceof CheckFailed) throw err;
        if (!(err instanceof MatrixError)) throw err;
        return err;
    }
}

export function client(accessToken) {
    return createClient({
        baseUrl,
        accessToken,
        fetchFn: tracingFetch,
        localTimeoutMs: REQUEST_TIMEOUT_MS,
        logger: quietLogger,
    });
}

export const isNonEmptyString = (v) => typeof v === "string" && v.length > 0;

// Stops the run with a failure after MS, whatever is still pending.
export function limitRunTime(ms) {
    setTimeout(() => {
        failed += 1;
        console.log(`FAIL - the whole run took longer than ${ms} ms`);
        printTrace();
        finish();
    }, ms).unref();
}

// From now on, failed HTTP exchanges are kept and printed with a failed
// check: the sync loops make requests of their own whose failures may not
// surface as exceptions in the test.
export function collectSyncPhaseFailures() {
    collectFailures = true;
}

export const anon = client();
// Makes the names of this run's accounts and rooms unique.
export const tag = `${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;

// Runs FN again after a 429 M_LIMIT_EXCEEDED, waiting the retry_after_ms the
// server asked for (spec, "Rate limiting"), at most twice and 15 s each.
export async function honouringRateLimits(fn) {
    for (let attempt = 0; ; attempt++) {
        try {
            return await fn();
        } catch (err) {
            const wait = err instanceof MatrixError && err.httpStatus === 429 ? (err.data?.retry_after_ms ?? 1000) : null;
            if (wait === null || attempt >= 2 || wait > 15_000) throw err;
            await new Promise((resolve) => setTimeout(resolve, wait));
        }
    }
}

// Registers an account through the m.login.dummy flow; the registration
// response, plus the password for logging in more devices.
export async function registerUser(name) {
    const localpart = `interop_${name}_${tag}`;
    const pass = randomBytes(18).toString("base64url");
    const first = await honouringRateLimits(() =>
        expectMatrixError(anon.registerRequest({ username: localpart, password: pass }), "POST /register without auth").then((err) => {
            if (err.httpStatus === 429) throw err;
            return err;
        }),
    );
    expect(first.httpStatus === 401 && isNonEmptyString(first.data?.session), `HTTP ${first.httpStatus}: ${JSON.stringify(first.data)}`);
    const res = await honouringRateLimits(() => anon.registerRequest({
        username: localpart,
        password: pass,
        initial_device_display_name: `interop ${name}`,
        auth: { type: "m.login.dummy", session: first.data.session },
    }));
    expect(isNonEmptyString(res.user_id) && isNonEmptyString(res.access_token), `register returned ${JSON.stringify({ ...res, access_token: "<redacted>" })}`);
    return { ...res, password: pass };
}

// Awaits a call that must fail with the given HTTP status and errcode.
export async function expectRefusal(promise, what, status, errcode) {
    const err = await expectMatrixError(promise, what);
    expect(
        err.httpStatus === status && (errcode === undefined || err.errcode === errcode),
        `${what}: HTTP ${err.httpStatus} ${err.errcode ?? "(no errcode)"}, expected ${status}${errcode ? ` ${errcode}` : ""}: ${JSON.stringify(err.data)}`,
    );
    return err;
}

// How many requests the trace holds for METHOD PATH-suffix (used to prove the
// SDK really sent a retry rather than answering it locally).
export const requestsTo = (method, pathSuffix) =>
    sentRequests.filter((r) => r.startsWith(`${method} `) && r.endsWith(pathSuffix)).length;

// Runs FN until it stops failing a check, for at most `ms`. Only for what the
// spec does not promise to be immediate: the public room directory (Synapse,
// for one, fills it from room statistics it updates in the background).
export async function eventually(fn, ms = 10_000) {
    const deadline = Date.now() + ms;
    for (;;) {
        try {
            return await fn();
        } catch (err) {
            if (!(err instanceof CheckFailed) || Date.now() > deadline) throw err;
            await new Promise((resolve) => setTimeout(resolve, 200));
        }
    }
}

export const isEventId = (v) => typeof v === "string" && v.startsWith("$") && v.length > 1;
export const isRoomId = (v) => typeof v === "string" && v.startsWith("!") && v.length > 1;

export const SYNC_WAIT_MS = 15_000;
export const loops = [];

// Starts LABEL's client (REG: a registration or login response) with its own
// sync loop, and with the SDK's Rust crypto (keys in memory) when RUST_CRYPTO,
// asking CRYPTO_CALLBACKS (createClient's) for secret storage keys.
// Every /sync response body is kept (rawSyncs) to check what the server
// sent, as opposed to what the SDK made of it.
export async function startSyncLoop(label, reg, startOpts, { rustCrypto = false, cryptoCallbacks } = {}) {
    const rawSyncs = [];
    const loop = { label, rawSyncs, states: [], trouble: null, gate: null, held: 0, gateEvents: new EventEmitter() };
    loop.client = createClient({
        baseUrl,
        accessToken: reg.access_token,
        userId: reg.user_id,
        deviceId: reg.device_id,
        store: new MemoryStore(),
        localTimeoutMs: REQUEST_TIMEOUT_MS,
        logger: sdkLogger(` ${label}`),
        cryptoCallbacks,
        fetchFn: async (input, init) => {
            const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
            if (loop.gate && url.pathname.endsWith("/sync")) {
                loop.held += 1;
                loop.gateEvents.emit("held");
                await loop.gate;
            }
            const res = await tracingFetch(input, init, label);
            if (res.ok && url.pathname.endsWith("/sync")) {
                const body = await res.clone().json();
                // Not enumerable: kept for error messages, left out of JSON.stringify.
                Object.defineProperty(body, "request", { value: `GET ${url.pathname}${url.search}` });
                rawSyncs.push(body);
            }
            return res;
        },
    });
    loop.client.on(ClientEvent.Sync, (state, _prev, data) => {
        loop.states.push(state);
        if ((state === SyncState.Error || state === SyncState.Reconnecting) && !loop.trouble) {
            const err = data?.error;
            loop.trouble = `${label}'s sync loop went to ${state}: ${err ? describe(err) : "(no error given)"}${err?.url ? ` [${err.url}]` : ""}`;
        }
    });
    loop.client.on(ClientEvent.SyncUnexpectedError, (err) => {
        loop.trouble ??= `${label}'s SDK could not process a /sync response: ${describe(err)}`;
    });
    if (rustCrypto) await loop.client.initRustCrypto({ useIndexedDB: false });
    loops.push(loop);
    void loop.client.startClient(startOpts);
    return loop;
}

// Holds LOOP's /sync requests until the returned function is called, so
// that whatever happens meanwhile reaches the client in one later sync (a
// gap, when it is more than the timeline limit). WAKE() must make the
// long-poll in flight return (send it something). Resolves once the next
// /sync is waiting: from then on the client receives nothing.
export async function holdSyncs(loop, wake) {
    let release;
    loop.gate = new Promise((resolve) => { release = resolve; });
    loop.held = 0;
    await wake();
    await when(`${loop.label}'s next /sync waits`, [[loop.gateEvents, "held"]], () => loop.held > 0);
    return () => {
        loop.gate = null;
        release();
    };
}

export function stopSyncLoop(loop) {
    loop.client.stopClient();
    loops.splice(loops.indexOf(loop), 1);
}

// Resolves with COND()'s value once it is truthy. COND is tried at once and
// again whenever one of SOURCES ([emitter, eventName] pairs) or any running
// sync loop's "sync" event fires; no polling. Rejects with a CheckFailed
// saying WHAT did not happen after MS, or at once when a sync loop is in
// trouble (see above). COND may throw a CheckFailed to give up early.
export function when(what, sources, cond, ms = SYNC_WAIT_MS) {
    return new Promise((resolve, reject) => {
        const all = [...sources, ...loops.map((l) => [l.client, ClientEvent.Sync])];
        const listeners = [];
        let settled = false;
        const settle = (fn, value) => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            for (const [emitter, name, listener] of listeners) emitter.off(name, listener);
            fn(value);
        };
        const test = () => {
            const trouble = loops.find((l) => l.trouble)?.trouble;
            if (trouble) return settle(reject, new CheckFailed(`${trouble} (while waiting until ${what})`));
            try {
                const value = cond();
                if (value) settle(resolve, value);
            } catch (err) {
                settle(reject, err);
            }
        };
        const timer = setTimeout(() => settle(reject, new CheckFailed(`${what}: not seen within ${ms} ms`)), ms);
        for (const [emitter, name] of all) {
            const listener = () => test();
            emitter.on(name, listener);
            listeners.push([emitter, name, listener]);
        }
        test();
    });
}

export const isReady = (loop) => loop.states.includes(SyncState.Prepared) || loop.states.includes(SyncState.Syncing);

// The timeline events of ROOM_ID in a loop's raw /sync responses (join section).
export const rawTimeline = (loop, roomIdToFind) =>
    loop.rawSyncs.flatMap((r) => r?.rooms?.join?.[roomIdToFind]?.timeline?.events ?? []);

// Records the live m.room.message events (not back-paginated ones, not local
// echoes) the SDK adds to LOOP's timeline for ROOM, in arrival order.
export function recordLiveMessages(loop, roomIdOf) {
    const seen = [];
    loop.client.on(RoomEvent.Timeline, (event, room, toStartOfTimeline, removed, data) => {
        if (room?.roomId !== roomIdOf() || toStartOfTimeline || removed || event.getType() !== "m.room.message") return;
        if (event.status !== null) return; // a local echo still being sent
        seen.push({ id: event.getId(), sender: event.getSender(), body: event.getContent().body, live: data?.liveEvent === true, at: Date.now() });
    });
    return seen;
}
