// Interop smoke test: an unmodified matrix-js-sdk registers a user, logs in,
// calls whoami and logs out against the homeserver given on the command line.
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
import { createClient, MatrixError } from "matrix-js-sdk";

const baseUrl = process.argv[2];
if (!baseUrl) {
    console.error("usage: node smoke.mjs HOMESERVER_URL");
    process.exit(2);
}
const expectedServerName = process.env.MYELIN_INTEROP_SERVER_NAME || null;
const REQUEST_TIMEOUT_MS = 15_000;
const WHOLE_RUN_TIMEOUT_MS = 120_000;

// The SDK's own log goes to stderr from MYELIN_INTEROP_SDK_LOG's level up
// (default warn; "debug" shows every request). One message is dropped: the
// SDK logs "Unable to refresh token" as an error whenever a request meets
// M_UNKNOWN_TOKEN, which here is a check's expected outcome.
const LEVELS = ["trace", "debug", "info", "warn", "error"];
const threshold = Math.max(0, LEVELS.indexOf(process.env.MYELIN_INTEROP_SDK_LOG ?? "warn"));
function sdkLogger(prefix) {
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
const quietLogger = sdkLogger("");

// ---- HTTP trace: the last exchanges, printed when a check fails. ----------

const trace = [];
const TRACE_KEEP = 6;
const SECRET_KEYS = new Set(["password", "access_token", "refresh_token"]);

function redact(text) {
    try {
        return JSON.stringify(JSON.parse(text), (k, v) => (SECRET_KEYS.has(k) ? "<redacted>" : v));
    } catch {
        return text.replace(/\s+/g, " ").trim();
    }
}

// A fetch for the SDK that records each request and response (secrets
// redacted) without changing them.
async function tracingFetch(input, init = {}) {
    const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
    const entry = {
        method: init.method ?? "GET",
        path: url.pathname + url.search,
        request: typeof init.body === "string" ? redact(init.body) : init.body ? "<binary>" : "",
        status: null,
        response: "",
    };
    trace.push(entry);
    if (trace.length > TRACE_KEEP) trace.shift();
    try {
        const res = await fetch(input, init);
        entry.status = res.status;
        entry.response = redact(await res.clone().text());
        return res;
    } catch (err) {
        entry.status = `network error: ${err.cause?.message ?? err.message}`;
        throw err;
    }
}

function printTrace() {
    console.log("  last HTTP exchanges (oldest first):");
    for (const e of trace) {
        console.log(`    ${e.method} ${e.path}${e.request ? ` body=${e.request}` : ""}`);
        console.log(`      -> ${e.status ?? "no answer"}${e.response ? ` ${e.response.slice(0, 500)}` : ""}`);
    }
}

// ---- checks ---------------------------------------------------------------

let passed = 0;
let failed = 0;

class CheckFailed extends Error {}

function expect(condition, message) {
    if (!condition) throw new CheckFailed(message);
}

function describe(err) {
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

function finish() {
    console.log(`${passed} passed, ${failed} failed`);
    process.exit(failed === 0 ? 0 : 1);
}

// Runs one check; its return value (if any) is shown after the name. Stops
// the run on failure.
async function check(name, fn) {
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
async function expectMatrixError(promise, what) {
    try {
        const body = await promise;
        throw new CheckFailed(`${what} succeeded, expected an error; got ${JSON.stringify(body)}`);
    } catch (err) {
        if (err instanceof CheckFailed) throw err;
        if (!(err instanceof MatrixError)) throw err;
        return err;
    }
}

function client(accessToken) {
    return createClient({
        baseUrl,
        accessToken,
        fetchFn: tracingFetch,
        localTimeoutMs: REQUEST_TIMEOUT_MS,
        logger: quietLogger,
    });
}

const isNonEmptyString = (v) => typeof v === "string" && v.length > 0;

// ---- the scenario ---------------------------------------------------------

setTimeout(() => {
    failed += 1;
    console.log(`FAIL - the whole run took longer than ${WHOLE_RUN_TIMEOUT_MS} ms`);
    printTrace();
    finish();
}, WHOLE_RUN_TIMEOUT_MS).unref();

const username = `interop_${Date.now().toString(36)}_${randomBytes(4).toString("hex")}`;
const password = randomBytes(18).toString("base64url");
const anon = client();

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

finish();
