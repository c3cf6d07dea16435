"""Gives the API fuzzer a world worth fuzzing, and prints its parameters.

Registers the fuzzing user and a second user, puts both in a room with a
message to point at, uploads a file and a filter, and prints a schemathesis
configuration (TOML) whose path parameters name these real things, so that
generated requests reach the handlers' logic instead of stopping at 404.

    python3 setup.py URL  > schemathesis.toml   (the token goes to stderr
                                                   as `TOKEN=...`)
"""

import json
import sys
import urllib.request

PASSWORD = "fuzzing password 1"


def call(base, method, path, token=None, body=None, raw=None, content_type=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", content_type or "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def register(base, name):
    answer = call(
        base,
        "POST",
        "/_matrix/client/v3/register",
        body={"username": name, "password": PASSWORD, "auth": {"type": "m.login.dummy"}},
    )
    return answer["access_token"], answer["user_id"], answer["device_id"]


def main(base):
    token, user_id, device_id = register(base, "fuzz")
    friend_token, friend_id, _ = register(base, "friend")
    v3 = "/_matrix/client/v3"
    room_id = call(
        base,
        "POST",
        f"{v3}/createRoom",
        token,
        {"preset": "public_chat", "room_alias_name": "fuzz", "invite": [friend_id]},
    )["room_id"]
    call(base, "POST", f"{v3}/join/{room_id}", friend_token, {})
    event_id = call(
        base,
        "PUT",
        f"{v3}/rooms/{room_id}/send/m.room.message/setup1",
        token,
        {"msgtype": "m.text", "body": "something to point at"},
    )["event_id"]
    filter_id = call(base, "POST", f"{v3}/user/{user_id}/filter", token, {"room": {"timeline": {"limit": 5}}})[
        "filter_id"
    ]
    mxc = call(
        base, "POST", "/_matrix/media/v3/upload", token, raw=b"fuzz", content_type="text/plain"
    )["content_uri"]
    server_name, media_id = mxc[len("mxc://") :].split("/", 1)
    version = call(
        base,
        "POST",
        f"{v3}/room_keys/version",
        token,
        {"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {"public_key": "abc"}},
    )["version"]

    print(f"TOKEN={token}", file=sys.stderr)
    parameters = {
        "path.userId": user_id,
        "path.roomId": room_id,
        "path.roomIdOrAlias": room_id,
        "path.roomAlias": f"#fuzz:{server_name}",
        "path.eventId": event_id,
        "path.filterId": filter_id,
        "path.deviceId": device_id,
        "path.serverName": server_name,
        "path.mediaId": media_id,
        "path.version": version,
    }
    print("[parameters]")
    for name, value in parameters.items():
        print(f"{json.dumps(name)} = {json.dumps(value)}")


if __name__ == "__main__":
    main(sys.argv[1])
