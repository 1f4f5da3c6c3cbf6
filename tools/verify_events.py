#!/usr/bin/env python3
"""A verifier of wfstate's events, written from docs/event-format.md alone.

It shares no code with wfstate: cbor2 decodes, hashlib hashes, and the fold and the
canonical encoding are written here again from the document.

    verify_events.py vectors FILE   check golden vectors (store/tests/vectors/events.json)
    verify_events.py export FILE    check every case of an export file (wfstate export)

Exit status 0 when everything verifies; 1 when something does not, each problem printed
with its case, version and reason; 2 for a file that cannot be read.
"""

import hashlib
import io
import json
import struct
import sys

import cbor2

ZERO_HASH = bytes(32)
PAYLOAD_KEYS = {
    "schema", "commit_id", "case_id", "version", "mutations", "committed_at_ms",
    "writer", "state_hash", "prev_event_hash",
}


class Invalid(Exception):
    """An event that does not verify, with the reason."""


# The canonical encoding (section 5).

def header(major, argument):
    """A CBOR head with the argument in its shortest form."""
    if argument < 24:
        return bytes([major << 5 | argument])
    for size, info in ((1, 24), (2, 25), (4, 26), (8, 27)):
        if argument < 1 << (8 * size):
            return bytes([major << 5 | info]) + argument.to_bytes(size, "big")
    raise Invalid(f"integer argument {argument} does not fit 64 bits")


def encode_float(number):
    """The shortest of half, single and double whose widening has the identical bits."""
    bits = struct.pack(">d", number)
    for code, fmt in ((0xF9, ">e"), (0xFA, ">f")):
        try:
            narrow = struct.pack(fmt, number)
        except (OverflowError, struct.error):
            continue
        if struct.pack(">d", struct.unpack(fmt, narrow)[0]) == bits:
            return bytes([code]) + narrow
    return b"\xfb" + bits


def encode(value):
    """The canonical CBOR encoding of a value: definite lengths, shortest heads, map keys
    in bytewise order of their UTF-8 bytes."""
    if value is None:
        return b"\xf6"
    if value is True:
        return b"\xf5"
    if value is False:
        return b"\xf4"
    if isinstance(value, int):
        return header(0, value) if value >= 0 else header(1, -1 - value)
    if isinstance(value, float):
        return encode_float(value)
    if isinstance(value, str):
        data = value.encode("utf-8")
        return header(3, len(data)) + data
    if isinstance(value, bytes):
        return header(2, len(value)) + value
    if isinstance(value, list):
        return header(4, len(value)) + b"".join(encode(item) for item in value)
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda item: item[0].encode("utf-8"))
        return header(5, len(items)) + b"".join(encode(k) + encode(v) for k, v in items)
    raise Invalid(f"a value of type {type(value).__name__} has no canonical encoding")


def sha256(data):
    return hashlib.sha256(data).digest()


# The fold (section 4).

def initial_state(case_id):
    return {
        "case_id": case_id,
        "created_at_ms": 0,
        "ctx": {},
        "last_commit_at_ms": 0,
        "metadata": None,
        "scopes": {"root": {"entered_at_ms": 0, "id": "root", "parent": "root",
                            "status": "active"}},
        "status": "running",
        "step_count": 0,
        "tokens": {},
        "version": 0,
    }


def field(mutation, name, kind):
    if name not in mutation:
        raise Invalid(f"{mutation.get('op')} has no {name}")
    value = mutation[name]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise Invalid(f"{mutation.get('op')}: {name} is not an unsigned integer")
    if kind is not int and kind is not object and not isinstance(value, kind):
        raise Invalid(f"{mutation.get('op')}: {name} is not a {kind.__name__}")
    return value


def check_keys(keys):
    for key in keys:
        if not isinstance(key, str) or key == "":
            raise Invalid(f"ctx key {key!r} is empty or not text")


def active_scope(state, scope_id):
    scope = state["scopes"].get(scope_id)
    if scope is None or scope["status"] != "active":
        raise Invalid(f"scope {scope_id} does not exist or is not active")


def descendants(state, scope_id):
    found, pending = {scope_id}, [scope_id]
    while pending:
        parent = pending.pop()
        for scope in state["scopes"].values():
            if scope["id"] != "root" and scope["parent"] == parent and scope["id"] not in found:
                found.add(scope["id"])
                pending.append(scope["id"])
    return found


def apply_mutation(state, mutation, committed_at_ms):
    op = mutation.get("op")
    if state["status"] != "running" and op != "set_metadata":
        raise Invalid(f"{op} on a case whose status is {state['status']}")
    tokens, scopes = state["tokens"], state["scopes"]
    if op == "set_ctx":
        ctx = field(mutation, "ctx", dict)
        check_keys(ctx)
        state["ctx"] = ctx
    elif op == "patch_ctx":
        remove, put = mutation.get("remove", []), mutation.get("set", {})
        check_keys(remove)
        check_keys(put)
        for key in remove:
            state["ctx"].pop(key, None)
        state["ctx"].update(put)
    elif op == "add_token":
        token_id = field(mutation, "id", str)
        if token_id in tokens:
            raise Invalid(f"token {token_id} exists")
        scope = field(mutation, "scope", str)
        active_scope(state, scope)
        tokens[token_id] = {"id": token_id, "ip": field(mutation, "ip", int), "scope": scope,
                            "status": "active", "value": field(mutation, "value", object)}
    elif op == "remove_token":
        if tokens.pop(field(mutation, "id", str), None) is None:
            raise Invalid(f"token {mutation['id']} does not exist")
    elif op == "update_token":
        token = tokens.get(field(mutation, "id", str))
        if token is None:
            raise Invalid(f"token {mutation['id']} does not exist")
        if "scope" in mutation:
            active_scope(state, field(mutation, "scope", str))
        if "status" in mutation:
            if mutation["status"] not in ("complete", "cancelled") or token["status"] != "active":
                raise Invalid(f"token {token['id']}: {token['status']} -> {mutation['status']}")
        for name, kind in (("ip", int), ("scope", str), ("value", object), ("status", str)):
            if name in mutation:
                token[name] = field(mutation, name, kind)
    elif op == "enter_scope":
        scope_id, parent = field(mutation, "id", str), field(mutation, "parent", str)
        if scope_id in scopes:
            raise Invalid(f"scope {scope_id} exists")
        active_scope(state, parent)
        scopes[scope_id] = {"entered_at_ms": committed_at_ms, "id": scope_id, "parent": parent,
                            "status": "active"}
    elif op == "exit_scope":
        scope_id = field(mutation, "id", str)
        if scope_id == "root" or scope_id not in scopes:
            raise Invalid(f"scope {scope_id} is root or does not exist")
        if any(s["parent"] == scope_id and s["id"] != "root" for s in scopes.values()):
            raise Invalid(f"scope {scope_id} has child scopes")
        inside = [t for t in tokens.values() if t["scope"] == scope_id]
        if any(t["status"] == "active" for t in inside):
            raise Invalid(f"scope {scope_id} has active tokens")
        del scopes[scope_id]
        for token in inside:
            del tokens[token["id"]]
    elif op == "cancel_scope":
        scope_id = field(mutation, "id", str)
        if scope_id not in scopes:
            raise Invalid(f"scope {scope_id} does not exist")
        cancelled = descendants(state, scope_id)
        for cancelled_id in cancelled:
            scopes[cancelled_id]["status"] = "cancelled"
        for token in tokens.values():
            if token["status"] == "active" and token["scope"] in cancelled:
                token["status"] = "cancelled"
    elif op == "increment_step_count":
        state["step_count"] += 1
    elif op == "set_metadata":
        state["metadata"] = field(mutation, "value", object)
    elif op == "set_case_status":
        status = field(mutation, "status", str)
        if status not in ("done", "failed", "cancelled"):
            raise Invalid(f"set_case_status to {status!r}")
        state["status"] = status
    else:
        raise Invalid(f"unknown op {op!r}")


class Case:
    """A case being verified: its state and the hash of its last event."""

    def __init__(self, case_id):
        self.state = initial_state(case_id)
        self.last_hash = ZERO_HASH

    def fold(self, payload):
        """Folds one stored payload; returns the decoded event."""
        try:
            event = cbor2.loads(payload)
        except Exception as error:  # cbor2 raises several kinds for malformed input
            raise Invalid(f"the payload does not decode: {error}") from error
        if not isinstance(event, dict) or set(event) != PAYLOAD_KEYS or event["schema"] != 1:
            raise Invalid("the payload is not an event of schema 1")
        state = self.state
        if event["case_id"] != state["case_id"]:
            raise Invalid(f"the event names case {event['case_id']}")
        if event["version"] != state["version"] + 1:
            raise Invalid(f"version {event['version']} where {state['version'] + 1} was next")
        if event["prev_event_hash"] != self.last_hash:
            raise Invalid("broken chain: prev_event_hash is not the previous event's hash")
        committed_at_ms = event["committed_at_ms"]
        for index, mutation in enumerate(event["mutations"]):
            try:
                apply_mutation(state, mutation, committed_at_ms)
            except Invalid as error:
                raise Invalid(f"mutation {index}: {error}") from error
        state["version"] += 1
        if state["version"] == 1:
            state["created_at_ms"] = committed_at_ms
        state["last_commit_at_ms"] = committed_at_ms
        if sha256(encode(state)) != event["state_hash"]:
            raise Invalid("state hash mismatch: the fold does not reach the committed state")
        self.last_hash = sha256(payload)
        return event


def verify_vectors(path):
    with open(path, encoding="utf-8") as file:
        vectors = json.load(file)
    problems, events = [], 0
    for vector in vectors["cases"]:
        case = Case(vector["case_id"])
        for version, expected in enumerate(vector["events"], start=1):
            payload = bytes.fromhex(expected["payload"])
            events += 1
            try:
                event = case.fold(payload)
            except Invalid as error:
                problems.append(f"{vector['name']} version {version}: {error}")
                break
            for what, actual in (("event_hash", sha256(payload)),
                                 ("state_hash", event["state_hash"])):
                if actual.hex() != expected[what]:
                    problems.append(f"{vector['name']} version {version}: {what} differs")
        if not problems and encode(case.state).hex() != vector["state"]:
            problems.append(f"{vector['name']}: the canonical state differs")
    return problems, f"{len(vectors['cases'])} vector cases, {events} events"


def verify_export(path):
    """Every case of an export file, and its trailer: the count of its records and the
    SHA-256 of every byte before the trailer."""
    problems, cases, events, last_position, trailer = [], {}, 0, 0, None
    with open(path, "rb") as file:
        data = file.read()
    stream = io.BytesIO(data)
    decoder = cbor2.CBORDecoder(stream)
    header_item = decoder.decode()
    if header_item != {"format": "wfstate-export", "schema": 2}:
        raise ValueError(f"not a wfstate export of schema 2: {header_item!r}")
    while stream.tell() < len(data):
        start = stream.tell()
        try:
            item = decoder.decode()
        except (EOFError, cbor2.CBORDecodeError) as error:
            problems.append(f"the file is cut inside, or damaged at, the record after "
                            f"position {last_position}: {error}")
            break
        if trailer is not None:
            problems.append("the file goes on after its trailer")
            break
        if isinstance(item, dict) and item.get("trailer") == "wfstate-export":
            trailer = item
            if item.get("events") != events:
                problems.append(f"the trailer counts {item.get('events')} events where the "
                                f"file holds {events}")
            if item.get("sha256") != hashlib.sha256(data[:start]).digest():
                problems.append("the trailer's hash is not the hash of the file's content")
            continue
        events += 1
        case_id, position = item["case_id"], item["position"]
        if position <= last_position:
            problems.append(f"position {position} after {last_position}: not in log order")
        last_position = position
        case = cases.setdefault(case_id, Case(case_id))
        if case is None:
            continue
        try:
            case.fold(item["payload"])
        except Invalid as error:
            problems.append(f"case {case_id} version {case.state['version'] + 1}: {error}")
            cases[case_id] = None
    if trailer is None and not problems:
        problems.append(f"the file ends without its trailer after {events} events: it was cut")
    return problems, f"{len(cases)} cases, {events} events"


def main(argv):
    if len(argv) != 3 or argv[1] not in ("vectors", "export"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    verify = verify_vectors if argv[1] == "vectors" else verify_export
    try:
        problems, counted = verify(argv[2])
    except (OSError, ValueError, KeyError, cbor2.CBORDecodeError) as error:
        print(f"cannot read {argv[2]}: {error}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem)
    if problems:
        print(f"{counted}: {len(problems)} problem(s)")
        return 1
    print(f"{counted}: every chain and state hash verified")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
