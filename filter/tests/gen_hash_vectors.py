#!/usr/bin/env python3
"""An independent implementation of mlcanary's documented sticky hash (filter/src/hash.rs).

Writes hash_vectors.txt, which the Rust tests check natively and compiled to wasm32 under Node: the
documentation, the native build and the .wasm Envoy runs must all put every user in the same bucket.
Run it again only if the documented hash changes (it must not: users would move).
"""
import pathlib

M64 = (1 << 64) - 1
FNV_OFFSET, FNV_PRIME = 0xCBF29CE484222325, 0x100000001B3


def fnv1a(h: int, data: bytes) -> int:
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & M64
    return h


def fmix64(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & M64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & M64
    return k ^ (k >> 33)


def bucket(salt: str, key: str) -> int:
    h = fnv1a(fnv1a(FNV_OFFSET, salt.encode()), b"\x1f")
    return fmix64(fnv1a(h, key.encode())) % 10000


def main() -> None:
    salts = ["fraud-model", "fraud-model-v7", "", "sälz"]
    keys = [f"user-{i}" for i in range(200)] + ["", "a", "x" * 300, "ünïcødé-ユーザー", "42", "user-0 "]
    out = pathlib.Path(__file__).with_name("hash_vectors.txt")
    with out.open("w", encoding="utf-8") as f:
        f.write("# salt\\tkey\\tbucket, from gen_hash_vectors.py (the documented hash, independently)\n")
        for s in salts:
            for k in keys:
                f.write(f"{s}\t{k}\t{bucket(s, k)}\n")


if __name__ == "__main__":
    main()
