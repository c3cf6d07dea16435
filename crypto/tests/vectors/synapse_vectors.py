"""Generates the room version 10/11/12 event vectors in crypto/src/event/tests.rs.

Run with the Python of a matrix-synapse install (these were made with
matrix-synapse 1.163.2 from PyPI, via synapse/crypto/event_signing.py
add_hashes_and_signatures and synapse/events make_event_from_dict().event_id),
signing with the spec appendix test key (ed25519:1 of server "domain").
Ed25519 signatures are deterministic, so the output is stable.
"""
import json
from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
from synapse.crypto.event_signing import add_hashes_and_signatures, compute_event_reference_hash
from synapse.events import make_event_from_dict
from signedjson.key import decode_signing_key_base64
from canonicaljson import encode_canonical_json

SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
key = decode_signing_key_base64("ed25519", "1", SEED)

def sign(rv, ev):
    v = KNOWN_ROOM_VERSIONS[rv]
    add_hashes_and_signatures(v, ev, "domain", key)
    e = make_event_from_dict(dict(ev), v)
    return e.event_id

out = {}
for rv in ["10", "11", "12"]:
    create_content = {"room_version": rv}
    if rv == "10":
        create_content["creator"] = "@a:domain"
    create = {"auth_events": [], "prev_events": [], "type": "m.room.create", "state_key": "",
              "sender": "@a:domain", "content": create_content, "depth": 1,
              "origin_server_ts": 1000000, "unsigned": {"age_ts": 1000000}}
    if rv != "12":
        create["room_id"] = "!r:domain"
    cid = sign(rv, create)
    room_id = "!r:domain" if rv != "12" else "!" + cid[1:]
    msg = {"auth_events": [] if rv == "12" else [cid], "prev_events": [cid], "type": "m.room.message",
           "room_id": room_id, "sender": "@a:domain", "origin": "domain",
           "content": {"body": "Here is the message content", "msgtype": "m.text"},
           "depth": 2, "origin_server_ts": 1000001, "unsigned": {"age_ts": 1000001}}
    mid = sign(rv, msg)
    out[rv] = {"create": {"signed": create, "event_id": cid}, "message": {"signed": msg, "event_id": mid}, "room_id": room_id}
print(json.dumps(out, indent=1))
