//! The sticky-routing hash. It is part of mlcanary's contract: every Envoy replica, every restart,
//! the controller's `mlcanary assign` and any other tool must put a user in the same bucket, so it is
//! fixed and documented here, never seeded per process.
//!
//! `bucket(salt, key) = fmix64(FNV-1a-64(salt ‖ 0x1F ‖ key)) mod 10000`
//!
//! FNV-1a-64 (offset basis 0xcbf29ce484222325, prime 0x100000001b3) over the bytes of the salt, one
//! unit-separator byte 0x1F, then the bytes of the key; `fmix64` is MurmurHash3's 64-bit finaliser,
//! which spreads FNV's weak low bits so that `mod 10000` is uniform.

/// Buckets in 100 %: weights are basis points (0.01 %).
pub const BUCKETS: u32 = 10_000;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[inline]
fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// MurmurHash3 `fmix64`.
#[inline]
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The 64-bit sticky hash of `key` under `salt`.
pub fn stable_hash(salt: &[u8], key: &[u8]) -> u64 {
    let h = fnv1a(FNV_OFFSET, salt);
    let h = fnv1a(h, &[0x1f]);
    fmix64(fnv1a(h, key))
}

/// The bucket (0..10000) of `key` under `salt`.
pub fn bucket(salt: &str, key: &str) -> u32 {
    (stable_hash(salt.as_bytes(), key.as_bytes()) % u64::from(BUCKETS)) as u32
}

/// SplitMix64: the per-VM random source for keyless requests and assigned ids. Seeded once from the
/// host; stepping it costs no host call on the request path.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        fmix64_splitmix(self.0)
    }
}

#[inline]
fn fmix64_splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// An id as its own hash, for the filter's maps of context ids (small distinct integers) and of
/// ticket nonces (random): a multiply spreads them, and SipHash (the std default) would only cost
/// time on every callback.
#[derive(Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
