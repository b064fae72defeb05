//! The synthetic transaction data set, generated from a documented process (see the example's
//! README). Ground-truth fraud does not depend on the customer's age; the *historic labels* one
//! model is trained on do: disputes by customers aged 60+ were too often booked as fraud.

/// A small, seeded, dependency-free PRNG (SplitMix64) so data sets are identical everywhere.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.f64().max(1e-12);
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

pub const AGE_BANDS: [&str; 3] = ["18-30", "31-60", "60+"];
pub const MERCHANTS: [&str; 5] = ["grocery", "travel", "online", "electronics", "gaming"];

/// One card transaction, as the models see it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Transaction {
    pub amount: f64,
    pub hour: u8,
    pub merchant_category: String,
    pub foreign: bool,
    pub age_band: String,
}

/// A transaction with its true label and the label history recorded for it.
#[derive(Debug, Clone)]
pub struct Example {
    pub tx: Transaction,
    pub fraud: bool,
    pub historic_label: bool,
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// The true fraud probability: amount, night hours, merchant risk and foreign use; never age.
pub fn true_fraud_probability(tx: &Transaction) -> f64 {
    let night = if tx.hour < 6 { 1.0 } else { 0.0 };
    let merchant = match tx.merchant_category.as_str() {
        "travel" => 0.6,
        "online" => 0.9,
        "electronics" => 1.3,
        "gaming" => 1.6,
        _ => 0.0,
    };
    let foreign = if tx.foreign { 1.8 } else { 0.0 };
    sigmoid(-5.6 + 0.9 * (1.0 + tx.amount / 100.0).log2() + 1.3 * night + merchant + foreign)
}

/// Age band shares among customers: 35 % 18-30, 45 % 31-60, 20 % 60+.
pub fn age_band_for(u: f64) -> &'static str {
    if u < 0.35 {
        AGE_BANDS[0]
    } else if u < 0.80 {
        AGE_BANDS[1]
    } else {
        AGE_BANDS[2]
    }
}

/// A random transaction of a customer in `age_band`.
pub fn transaction(rng: &mut Rng, age_band: &str) -> Transaction {
    let amount = (4.0 + 1.1 * rng.normal()).exp().clamp(1.0, 20_000.0);
    let hour = if rng.f64() < 0.15 {
        rng.below(6) as u8
    } else {
        6 + rng.below(18) as u8
    };
    let merchant = MERCHANTS[rng.below(MERCHANTS.len() as u64) as usize];
    Transaction {
        amount: (amount * 100.0).round() / 100.0,
        hour,
        merchant_category: merchant.to_string(),
        foreign: rng.f64() < 0.08,
        age_band: age_band.to_string(),
    }
}

/// Share of legitimate transactions of customers aged 60+ that the history books as fraud.
pub const HISTORIC_ELDERLY_MISLABEL: f64 = 0.12;

/// `n` labelled examples from seed `seed`.
pub fn dataset(seed: u64, n: usize) -> Vec<Example> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| {
            let band = age_band_for(rng.f64());
            let tx = transaction(&mut rng, band);
            let fraud = rng.f64() < true_fraud_probability(&tx);
            let mislabel = band == "60+" && rng.f64() < HISTORIC_ELDERLY_MISLABEL;
            Example {
                tx,
                fraud,
                historic_label: fraud || mislabel,
            }
        })
        .collect()
}
