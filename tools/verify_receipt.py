#!/usr/bin/env python3
"""A verifier of wfstate's Merkle proofs, written from RFC 9162 section 2.1 alone.

It shares no code with wfstate: hashlib hashes, and the proof checks are the RFC's
iterative algorithms (2.1.3.2 and 2.1.4.2), where wfstate walks the tree recursively.

    verify_receipt.py merkle FILE   check the Merkle vectors (store/tests/vectors/merkle.json)

Exit status 0 when everything verifies; 1 when something does not, each problem printed;
2 for a file that cannot be read.
"""

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


def main(argv):
    if len(argv) != 3 or argv[1] != "merkle":
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        problems, counted = verify_merkle(argv[2])
    except (OSError, ValueError, KeyError, IndexError) as error:
        print(f"cannot read {argv[2]}: {error}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem)
    if problems:
        print(f"{counted}: {len(problems)} problem(s)")
        return 1
    print(f"{counted}: every root and proof verified")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
