#!/usr/bin/env python3
"""Writes the committed seed corpora of the targets whose input is text:
the spec appendix's canonical JSON and signing examples
(/work/shared/vectors, from matrix-org/matrix-spec content/appendices.md),
and a transaction as the Server-Server API's examples show one."""
import json
import os
import sys

vectors = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/vectors/matrix-spec-appendices.json"
spec = json.load(open(vectors))
here = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    directory = os.path.join(here, "corpus", target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


for i, case in enumerate(spec["canonical_json"]):
    write("canonical_json", f"spec-canonical-{i}", case["input_text"])
for i, case in enumerate(spec["json_signing"]):
    write("canonical_json", f"spec-signed-{i}", json.dumps(case["expected"], indent=1))

events = [case["input"] for case in spec["event_signing"]] + [case["expected"] for case in spec["event_signing"]]
create = {
    "type": "m.room.create", "state_key": "", "sender": "@a:domain", "origin_server_ts": 1000000,
    "content": {"room_version": "12"}, "prev_events": [], "auth_events": [], "depth": 1,
    "hashes": {}, "signatures": {},
}
events.append(create)
# Room versions 1, 2, 10, 11 and 12 (the first byte picks one of twelve).
for i, event in enumerate(events):
    for version_index in (0, 9, 10, 11):
        seed = dict(event, event_id="$spec:domain") if version_index == 0 else event
        write("pdu", f"spec-event-{i}-v{version_index + 1}", bytes([version_index]) + json.dumps(seed).encode())

header = 'X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF"'
transaction = {
    "origin": "remote.example",
    "origin_server_ts": 1404835423000,
    "pdus": [dict(spec["event_signing"][1]["expected"], sender="@a:remote.example")],
    "edus": [
        {"edu_type": "m.typing", "content": {"room_id": "!x:domain", "user_id": "@a:remote.example", "typing": True}},
        {"edu_type": "m.receipt", "content": {"!x:domain": {"m.read": {"@a:remote.example": {
            "event_ids": ["$x:domain"], "data": {"ts": 1533358089009}}}}}},
        {"edu_type": "m.direct_to_device", "content": {
            "sender": "@a:remote.example", "type": "m.room_key_request", "message_id": "hiezohf6Hoo7kaev",
            "messages": {"@fuzzer:localhost": {"*": {"action": "request_cancellation", "request_id": "1",
                                                      "requesting_device_id": "DEV"}}}}},
        {"edu_type": "m.device_list_update", "content": {
            "user_id": "@a:remote.example", "device_id": "QBUAZIFURK", "stream_id": 6, "prev_id": [5],
            "deleted": False, "keys": {}}},
        {"edu_type": "m.presence", "content": {"push": []}},
    ],
}
write("federation_transaction", "spec-transaction", f"{header}\ntxn1\n{json.dumps(transaction)}")
write("federation_transaction", "empty-transaction", '\nt\n{"origin":"remote.example"}')
