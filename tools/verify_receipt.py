#!/usr/bin/env python3
"""A verifier of wfstate's receipts, proofs and signed checkpoints, written from RFC 9162
section 2.1, the C2SP signed-note and tlog-checkpoint formats and docs/event-format.md alone.

It shares no code with wfstate: hashlib hashes, the proof checks are the RFC's iterative
algorithms (2.1.3.2 and 2.1.4.2, where wfstate walks the tree recursively), and Ed25519 is
the cryptography package's.

    verify_receipt.py merkle FILE             check the Merkle vectors
                                              (store/tests/vectors/merkle.json)
    verify_receipt.py receipt FILE KEY...     check a receipt with its proof
                                              (`wfstate receipt CASE --version V --json`)
                                              against the verifier keys trusted

Exit status 0 when everything verifies; 1 when something does not, each problem printed
with its code; 2 for a file that cannot be read.
"""

import base64
import hashlib
import json
import sys


def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def mth(leaves):
    """The Merkle tree hash of a list of leaf data (RFC 9162 2.1.1)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def verify_inclusion(leaf, index, size, path, root):
    """RFC 9162 2.1.3.2: whether `path` proves `leaf` (a leaf hash) at `index` of the tree
    of `size` leaves with `root`."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first, second, first_hash, second_hash, path):
    """RFC 9162 2.1.4.2: whether `path` proves the tree of `first` leaves with `first_hash`
    a prefix of the tree of `second` leaves with `second_hash`."""
    if first == 0 or first > second:
        return False
    if first == second:
        return not path and first_hash == second_hash
    if not path:
        return False
    if first & (first - 1) == 0:
        path = [first_hash] + list(path)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_hash and sr == second_hash and sn == 0


def tampered(path):
    """The path with its first hash changed, or with a hash added when it is empty."""
    if not path:
        return [bytes(32)]
    return [bytes([path[0][0] ^ 1]) + path[0][1:]] + list(path[1:])


def verify_merkle(path):
    with open(path, encoding="utf-8") as file:
        vectors = json.load(file)
    problems = []
    leaves = [bytes.fromhex(leaf) for leaf in vectors["leaves"]]
    roots = [bytes.fromhex(root) for root in vectors["roots"]]
    for size, root in enumerate(roots):
        if mth(leaves[:size]) != root:
            problems.append(f"the root of {size} leaves differs")
    for vector in vectors["inclusion"]:
        size, index = vector["size"], vector["index"]
        proof = [bytes.fromhex(h) for h in vector["proof"]]
        leaf = leaf_hash(leaves[index])
        if not verify_inclusion(leaf, index, size, proof, roots[size]):
            problems.append(f"the inclusion proof of leaf {index} in {size} fails")
        if verify_inclusion(leaf, index, size, tampered(proof), roots[size]):
            problems.append(f"a changed inclusion proof of leaf {index} in {size} passes")
    for vector in vectors["consistency"]:
        old, size = vector["old_size"], vector["size"]
        proof = [bytes.fromhex(h) for h in vector["proof"]]
        if not verify_consistency(old, size, roots[old], roots[size], proof):
            problems.append(f"the consistency proof from {old} to {size} fails")
        if old < size and verify_consistency(old, size, roots[old], roots[size], tampered(proof)):
            problems.append(f"a changed consistency proof from {old} to {size} passes")
    counted = (f"{len(roots)} roots, {len(vectors['inclusion'])} inclusion and "
               f"{len(vectors['consistency'])} consistency proofs")
    return problems, counted


class Problem(Exception):
    """A receipt or checkpoint that does not verify, with its code."""

    def __init__(self, code, detail):
        super().__init__(f"{code}: {detail}")


def parse_verifier_key(text):
    """A signed-note verifier key NAME+KEYID+BASE64 (Ed25519): (name, key id, public key)."""
    name, key_id, encoded = text.strip().split("+", 2)
    raw = base64.b64decode(encoded, validate=True)
    if len(raw) != 33 or raw[0] != 0x01:
        raise ValueError(f"{text}: not an Ed25519 verifier key")
    expected = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if bytes.fromhex(key_id) != expected:
        raise ValueError(f"{text}: the key id does not match the key")
    return name, expected, raw[1:]


def open_note(note, keys):
    """The text of a signed note, once a signature of a trusted key verifies it."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    text, sep, signatures = note.rpartition("\n\n")
    if not sep or not signatures.endswith("\n"):
        raise Problem("checkpoint_malformed", "not a signed note")
    text += "\n"
    seen = []
    for line in signatures[:-1].split("\n"):
        if not line.startswith("\u2014 ") or line.count(" ") != 2:
            raise Problem("checkpoint_malformed", f"{line!r} is no signature line")
        _, name, encoded = line.split(" ")
        signed = base64.b64decode(encoded, validate=True)
        if len(signed) != 68:
            raise Problem("checkpoint_malformed", f"the signature of {name} is not 68 bytes")
        seen.append(f"{name}+{signed[:4].hex()}")
        for key_name, key_id, public in keys:
            if (key_name, key_id) == (name, signed[:4]):
                try:
                    Ed25519PublicKey.from_public_bytes(public).verify(signed[4:], text.encode())
                except InvalidSignature:
                    raise Problem("checkpoint_signature_invalid",
                                  f"the signature of {name} does not verify") from None
                return text
    raise Problem("checkpoint_key_unknown", f"signed by {', '.join(seen)}, no trusted key")


def parse_checkpoint(text):
    """origin, size, root and time of a checkpoint's four lines."""
    lines = text[:-1].split("\n")
    if len(lines) != 4 or not lines[3].startswith("time "):
        raise Problem("checkpoint_malformed", "a checkpoint has 4 lines: origin, size, root, time")
    root = base64.b64decode(lines[2], validate=True)
    if len(root) != 32:
        raise Problem("checkpoint_malformed", "the root is not 32 bytes")
    return lines[0], int(lines[1]), root, int(lines[3][5:])


def verify_receipt_file(path, key_texts):
    with open(path, encoding="utf-8") as file:
        proven = json.load(file)
    keys = [parse_verifier_key(text) for text in key_texts]
    receipt = proven["receipt"]
    where = f"receipt of {receipt['case_id']} v{receipt['version']} at position {receipt['position']}"
    try:
        origin, size, root, time_ms = parse_checkpoint(open_note(proven["checkpoint"], keys))
        leaf = leaf_hash(bytes.fromhex(receipt["event_hash"]))
        proof = [bytes.fromhex(h) for h in proven["inclusion_proof"]]
        if not verify_inclusion(leaf, proven["leaf_index"], size, proof, root):
            raise Problem("inclusion_proof_invalid",
                          f"the proof does not lead from leaf {proven['leaf_index']} to the "
                          f"root of the checkpoint of {size} events")
    except Problem as problem:
        return [f"{where}: {problem}"], where
    return [], f"{where}: in the checkpoint of {size} events of {origin} (time {time_ms})"


def main(argv):
    if len(argv) >= 3 and argv[1] == "merkle" and len(argv) == 3:
        verify = lambda: verify_merkle(argv[2])  # noqa: E731
    elif len(argv) >= 4 and argv[1] == "receipt":
        verify = lambda: verify_receipt_file(argv[2], argv[3:])  # noqa: E731
    else:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        problems, counted = verify()
    except (OSError, ValueError, KeyError, IndexError) as error:
        print(f"cannot read {argv[2]}: {error}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem)
    if problems:
        print(f"{counted}: {len(problems)} problem(s)")
        return 1
    print(f"{counted}: verified")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
